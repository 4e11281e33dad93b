"""Strategy B: one GRPO LoRA per chosen dimension, each rewarded by that dimension alone."""

from __future__ import annotations

from engine.context import StageContext


def run(ctx: StageContext) -> None:
    from engine.models import loading as models
    from engine.training.grpo import start_model, train_grpo

    backend = models.pick_backend(ctx.cfg)
    ctx.event("backend", f"backend: {backend.reason}", backend=backend.name)
    start = start_model(ctx, backend)
    dims = ctx.cfg.grpo_dims.dimensions
    for i, dim in enumerate(dims):
        out = ctx.folder / dim
        if (out / "adapter" / "adapter_config.json").exists():
            ctx.log(f"{dim}: adapter already trained on an earlier attempt")
            ctx.progress((i + 1) * ctx.cfg.grpo_dims.max_steps, len(dims) * ctx.cfg.grpo_dims.max_steps, f"{dim}/done")
            continue
        ctx.log(f"Strategy B {i + 1}/{len(dims)}: GRPO on {dim} alone")
        # Each dimension's metrics keep TRL's names under a per-dimension prefix.
        steps = ctx.cfg.grpo_dims.max_steps
        trainer, _ = train_grpo(ctx, backend, start, out, max_steps=steps, dims=(dim,), weights={dim: 1.0},
                                metric_prefix=f"{dim}/", progress_span=(i * steps, len(dims) * steps))
        if ctx.should_stop():
            return
        trainer.save_model(str(out / "adapter"))
        ctx.artifact("adapter", out / "adapter", dimension=dim, steps=trainer.state.global_step)
