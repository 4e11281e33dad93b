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
    trainer, _ = train_sft(ctx, backend, base, ctx.folder)
    if ctx.should_stop():
        return  # the callback saved a checkpoint at this step; resume continues from it
    adapter = ctx.folder / "adapter"
    trainer.save_model(str(adapter))
    ctx.artifact("adapter", adapter, backend=backend.name, steps=trainer.state.global_step)
    ctx.log(f"SFT adapter saved to {adapter} after {trainer.state.global_step} steps")
