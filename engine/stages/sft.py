"""Step 2: QLoRA SFT with TRL's SFTTrainer (Unsloth's on that backend) on the chosen traces. The loop is
engine.training.sft; this stage picks the backend, builds the base once and saves the adapter."""

from __future__ import annotations

from engine.context import StageContext


def run(ctx: StageContext) -> None:
    from engine.models import loading as models
    from engine.training import distributed
    from engine.training.data import check_has_data
    from engine.training.sft import train_sft

    check_has_data(ctx.store, ctx.cfg, ctx.name, "traces")  # before any model loads: a run without data fails at once
    backend = models.pick_backend(ctx.cfg)
    base = models.base_path(ctx.cfg, ctx.run_dir, ctx.log, ctx.progress)  # built once, before any rank starts
    if distributed.should_launch(ctx):
        distributed.launch_ranks(ctx)
        return
    ctx.event("backend", f"backend: {backend.reason}", backend=backend.name, device=backend.device)
    from engine.training import data as traindata
    from engine.training import sft_cache

    rows = traindata.sft_rows(ctx.store, ctx.cfg.grpo.reward_weights, ctx.cfg.sft.min_score, ctx.log,
                              traindata.demo_data_reason(ctx.cfg, ctx.name))
    key = sft_cache.inputs_hash(ctx.cfg, rows)
    adapter = ctx.folder / "adapter"
    cached = sft_cache.find(ctx.run_dir.parent, key) if ctx.cfg.sft.reuse else None
    if cached is not None:
        if not ctx.primary:
            return  # rank 0 copies the cached adapter; the other ranks have nothing to train
        sft_cache.take(cached, adapter)
        record = {"reused": True, "hash": key, "cache": cached["path"], "source_run": cached["source_run"],
                  "steps": cached.get("steps")}
        ctx.store.record_sft_source(record)
        ctx.artifact("adapter", adapter, reused_from=cached["path"], source_run=cached["source_run"], inputs_hash=key)
        ctx.event("sft_reused", f"SFT reused: identical SFT inputs (hash {key[:12]}) were trained by run "
                  f"{cached['source_run']}; adapter copied from {cached['path']} to {adapter}", **record)
        return
    trainer, _ = train_sft(ctx, backend, base, ctx.folder, rows=rows)
    if ctx.should_stop():
        return  # the callback saved a checkpoint at this step; resume continues from it
    trainer.save_model(str(adapter))
    if not ctx.primary:
        return  # only rank 0 saves the adapter (the Trainer's should_save), records it and publishes it
    steps = trainer.state.global_step
    ctx.artifact("adapter", adapter, backend=backend.name, steps=steps, inputs_hash=key)
    ctx.log(f"SFT adapter saved to {adapter} after {steps} steps")
    published = sft_cache.publish(ctx.run_dir.parent, key, adapter, ctx.run_id, steps) if ctx.cfg.sft.reuse else None
    ctx.store.record_sft_source({"reused": False, "hash": key, "cache": str(published / "adapter") if published else None,
                                 "source_run": ctx.run_id, "steps": steps})
    if published:
        ctx.log(f"SFT adapter cached as {published} for runs with the same SFT inputs (hash {key[:12]})")
