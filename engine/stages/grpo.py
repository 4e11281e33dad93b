"""Step 3: GRPO with TRL's GRPOTrainer on the SFT model; the reward is nine judge dimensions with reward_weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.runner.context import StageContext, StageFailed
from engine.dims import DIMENSIONS, normalised


def grpo_args(ctx: StageContext, knobs: dict[str, Any], out: Path, weights: list[float], max_steps: int):
    from trl import GRPOConfig

    from engine.training.trainer import common_args

    g = ctx.cfg.grpo
    return GRPOConfig(
        **common_args(ctx, out, g.logging_steps),
        learning_rate=g.learning_rate,
        max_steps=max_steps,
        num_generations=knobs["num_generations"],
        max_completion_length=knobs["max_completion_length"],
        per_device_train_batch_size=g.per_device_train_batch_size,
        gradient_accumulation_steps=g.gradient_accumulation_steps,
        beta=g.beta,
        temperature=g.temperature,
        reward_weights=weights,
    )


def train_grpo(ctx: StageContext, backend, start_model: str, out: Path, *, max_steps: int,
               dims: tuple[str, ...] = DIMENSIONS, weights: dict[str, float] | None = None,
               num_generations: int | None = None, max_completion_length: int | None = None, metric_prefix: str = ""):
    """Train a GRPO LoRA from `start_model` into `out`. Shared by grpo, grpo-dims and smoke. Returns (trainer, cb)."""
    from datasets import Dataset

    from engine.training import models
    from engine.training import trainer as training
    from engine.training import data as traindata
    from engine.training.callbacks import StoreCallback
    from engine.training.rewards import JudgeCache, make_scorer
    from engine.training.vram import record_estimate, record_peak

    g = ctx.cfg.grpo
    weights = normalised(weights or g.reward_weights)  # so TRL's reward is dims.weighted_score
    prompts = traindata.grpo_prompts(ctx.store, traindata.demo_data_reason(ctx.cfg, ctx.name), ctx.log)
    if not prompts:
        raise StageFailed("no prompts for GRPO; run datagen first")
    dataset = Dataset.from_list(prompts)
    scorer, judge_name = make_scorer(ctx)
    cache = JudgeCache(scorer, ctx, dims, weights, g.sample_every, g.samples_per_store)
    knobs = {
        "num_generations": num_generations or g.num_generations,
        "max_completion_length": max_completion_length or g.max_completion_length,
    }
    gen_batch = g.per_device_train_batch_size * g.gradient_accumulation_steps * ctx.cfg.train.num_processes
    ctx.log(
        f"GRPO: {len(prompts)} prompts, judge {judge_name}, reward = sum of {len(dims)} dimensions x reward_weights; "
        f"generation batch {gen_batch} (per_device {g.per_device_train_batch_size} x accumulation "
        f"{g.gradient_accumulation_steps}) divides by num_generations {knobs['num_generations']}"
    )
    est = record_estimate(
        ctx, start_model, bits=4 if backend.quantized else 16, seq_len=g.max_prompt_length,
        batch=g.per_device_train_batch_size, num_generations=knobs["num_generations"],
        completion_len=knobs["max_completion_length"],
    )
    callback = StoreCallback(ctx, prefix=metric_prefix, total_steps=max_steps)

    def build(k: dict[str, Any]):
        from trl import GRPOTrainer

        model, tok, peft_cfg = models.load_for_training(ctx.cfg, backend, start_model, g.max_prompt_length + k["max_completion_length"])
        return GRPOTrainer(
            model=model, reward_funcs=cache.reward_functions(),
            args=grpo_args(ctx, k, out / "checkpoints", [weights[d] for d in dims], max_steps),
            train_dataset=dataset, processing_class=tok, peft_config=peft_cfg, callbacks=[callback],
        )

    trainer = training.train_with_fallbacks(ctx, build, knobs, training.grpo_fallbacks(), out / "checkpoints")
    record_peak(ctx, est, callback.step_times)
    ctx.log(f"judge calls: {cache.calls} (one per distinct completion, shared by the {len(dims)} reward functions)")
    return trainer, callback


def start_model(ctx: StageContext, backend) -> str:
    """The SFT adapter merged into the base (the seed's sequential SFT then GRPO), or the base when there is none."""
    from engine.evaluation.merging import merge_adapter
    from engine.training import models

    base = models.base_path(ctx.cfg, ctx.run_dir, ctx.log, ctx.progress)
    adapter = ctx.run_dir / "sft" / "adapter"
    if not ctx.cfg.grpo.merge_sft:
        ctx.log("grpo.merge_sft is off: starting from the base model")
        return base
    if not adapter.exists():
        ctx.log("no SFT adapter in this run: starting GRPO from the base model", "warn")
        return base
    models.check_adapter(adapter)
    merged = merge_adapter(ctx.cfg, backend, base, adapter, ctx.run_dir / "sft" / "merged")
    ctx.log(f"starting from the SFT adapter merged into the base ({merged})")
    return str(merged)


def run(ctx: StageContext) -> None:
    from engine.runner import distributed
    from engine.training import models
    from engine.training.data import check_has_data

    check_has_data(ctx.store, ctx.cfg, ctx.name, "prompts")  # before any model loads or merges
    backend = models.pick_backend(ctx.cfg)
    start = start_model(ctx, backend)  # the SFT merge happens once, before any rank starts
    if distributed.should_launch(ctx):
        distributed.launch_ranks(ctx)
        return
    ctx.event("backend", f"backend: {backend.reason}", backend=backend.name, device=backend.device)
    trainer, _ = train_grpo(ctx, backend, start, ctx.folder, max_steps=ctx.cfg.grpo.max_steps)
    if ctx.should_stop():
        return
    adapter = ctx.folder / "adapter"
    trainer.save_model(str(adapter))
    ctx.artifact("adapter", adapter, backend=backend.name, steps=trainer.state.global_step)
    ctx.log(f"GRPO adapter saved to {adapter} after {trainer.state.global_step} steps")
