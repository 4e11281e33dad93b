"""Step 3: GRPO with TRL's GRPOTrainer on the SFT model; the reward is nine judge dimensions with reward_weights.
The loop is engine.training.grpo; this stage picks the backend, audits the judge and saves the adapter."""

from __future__ import annotations

from engine.context import StageContext


def report_gain(ctx: StageContext) -> None:
    """Did the reward climb? First 10 steps against the last 10, with a bootstrap interval, logged and stored."""
    from engine.reporting.health_table import gain_line, reward_gain

    _, _, rewards = ctx.store.metric_series(ctx.name, "reward")
    gain = reward_gain(rewards, seed=ctx.cfg.run.seed)
    if gain is not None:
        ctx.result("reward_gain", ctx.name, gain)
        ctx.log(gain_line(gain))


def run(ctx: StageContext) -> None:
    from engine.models import loading as models
    from engine.training import distributed
    from engine.training.data import check_has_data
    from engine.training.grpo import start_model, train_grpo

    check_has_data(ctx.store, ctx.cfg, ctx.name, "prompts")  # before any model loads or merges
    backend = models.pick_backend(ctx.cfg)
    start = start_model(ctx, backend)  # the SFT merge happens once, before any rank starts
    if ctx.cfg.health.audit:  # the reward judge is audited before GRPO trusts it, once, before any rank starts
        from engine.evaluation.audit import run_audit

        run_audit(ctx)
    if distributed.should_launch(ctx):
        distributed.launch_ranks(ctx)
        return
    ctx.event("backend", f"backend: {backend.reason}", backend=backend.name, device=backend.device)
    trainer, _ = train_grpo(ctx, backend, start, ctx.folder, max_steps=ctx.cfg.grpo.max_steps)
    if ctx.should_stop():
        return
    report_gain(ctx)
    adapter = ctx.folder / "adapter"
    trainer.save_model(str(adapter))
    ctx.artifact("adapter", adapter, backend=backend.name, steps=trainer.state.global_step)
    ctx.log(f"GRPO adapter saved to {adapter} after {trainer.state.global_step} steps")
