"""The GRPO training loop: TRL's GRPOTrainer on a start model, the nine judge dimensions as rewards with
reward_weights. Shared by the grpo, grpo-dims and smoke stages (each a thin `run(ctx)` in engine/stages/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.context import StageContext, StageFailed
from engine.dims import DIMENSIONS, normalised


def grpo_args(ctx: StageContext, knobs: dict[str, Any], out: Path, weights: list[float], max_steps: int):
    from trl import GRPOConfig

    from engine.training.trainer import common_args

    g = ctx.cfg.grpo
    vllm: dict[str, Any] = {}
    if g.use_vllm:  # TRL's own vLLM, colocated in this process
        vllm = {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": g.vllm_gpu_memory_utilization}
    elif knobs.get("fast_inference"):  # Unsloth's vLLM engine, already on the model
        vllm = {"use_vllm": True}
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
        log_completions=True,  # TRL writes each logged step's completions table (engine.training.completions reads it)
        num_completions_to_print=0,  # ... and prints none of it into the worker log
        **vllm,
    )


def vllm_mode(ctx: StageContext, backend) -> str:
    """Which fast generation path is on: "trl" (grpo.use_vllm), "unsloth" (model.fast_inference) or ""."""
    if ctx.cfg.grpo.use_vllm:
        if backend.device != "cuda":
            raise StageFailed("grpo.use_vllm needs CUDA (vLLM runs on the GPU); turn it off on this machine")
        return "trl"
    if ctx.cfg.model.fast_inference and backend.name == "unsloth":
        return "unsloth"
    return ""


def train_grpo(ctx: StageContext, backend, start_model: str, out: Path, *, max_steps: int,
               dims: tuple[str, ...] = DIMENSIONS, weights: dict[str, float] | None = None,
               num_generations: int | None = None, max_completion_length: int | None = None, metric_prefix: str = "",
               vram_key: str | None = None, progress_span: tuple[int, int] | None = None):
    """Train a GRPO LoRA from `start_model` into `out`. Shared by grpo, grpo-dims and smoke. Returns (trainer, cb);
    cb.vram holds the estimate and the measured peaks (also stored as result vram/<vram_key or stage>)."""
    from datasets import Dataset

    from engine.models import loading as models
    from engine.training import trainer as training
    from engine.training import data as traindata
    from engine.training.callbacks import StoreCallback
    from engine.training.completions import CompletionsRecorder, with_lengths
    from engine.training.estimate import batch_from_args
    from engine.training.judge_watch import JudgeWatch
    from engine.training.prompt_fit import fit_prompts
    from engine.judging.factory import judge_concurrency, make_scorer
    from engine.training.rewards import JudgeCache
    from engine.training.vram import record_estimate, record_peak

    g = ctx.cfg.grpo
    weights = normalised(weights or g.reward_weights)  # so TRL's reward is dims.weighted_score
    prompts = traindata.grpo_prompts(ctx.store, traindata.demo_data_reason(ctx.cfg, ctx.name), ctx.log)
    if not prompts:
        raise StageFailed("no prompts for GRPO; run datagen first")
    prompts, cut = fit_prompts(models.load_tokenizer(_tokenizer_source(ctx, start_model)), prompts, g.max_prompt_length)
    if cut:
        ctx.log(f"grpo.max_prompt_length = {g.max_prompt_length}: {cut} of {len(prompts)} prompts cut from the left")
    dataset = Dataset.from_list(prompts)
    scorer, judge_name = make_scorer(ctx)
    cache = JudgeCache(scorer, ctx, dims, weights, g.sample_every, g.samples_per_store,
                       concurrency=judge_concurrency(ctx), max_entries=g.judge_cache_size)
    fast = vllm_mode(ctx, backend)
    knobs = {
        "num_generations": num_generations or g.num_generations,
        "max_completion_length": max_completion_length or g.max_completion_length,
        "fast_inference": fast == "unsloth",
    }
    ctx.log(f"GRPO: {len(prompts)} prompts, judge {judge_name}, reward = sum of {len(dims)} dimensions x reward_weights"
            + (f"; generation through vLLM ({fast})" if fast else ""))
    health, facts = doctor(ctx, weights, metric_prefix)
    callback = StoreCallback(ctx, prefix=metric_prefix, total_steps=max_steps, health=health, progress_span=progress_span)
    recorder = CompletionsRecorder(ctx, dims, weights, g.sample_every, metric_prefix)
    estimates: list = []
    watch = JudgeWatch(ctx, cache, g.judge_max_failed_share, g.judge_failure_window, prefix=metric_prefix)

    def build(k: dict[str, Any]):
        from trl import GRPOTrainer

        model, tok, peft_cfg = models.load_for_training(ctx.cfg, backend, start_model,
                                                        g.max_prompt_length + k["max_completion_length"],
                                                        fast_inference=k["fast_inference"])
        facts.max_completion_length = k["max_completion_length"]  # a fallback may have shortened it
        funcs = cache.reward_functions()
        funcs[0] = with_lengths(funcs[0])
        trainer = GRPOTrainer(
            model=model, reward_funcs=funcs,
            args=grpo_args(ctx, k, out / "checkpoints", [weights[d] for d in dims], max_steps),
            train_dataset=dataset, processing_class=tok, peft_config=peft_cfg, callbacks=[callback, watch, recorder],
        )
        return trainer

    def on_built(trainer) -> None:
        # The batch as TRL runs it, after any backend patch (Unsloth may raise it to num_generations).
        a = trainer.args
        batch = batch_from_args(a, prompt_len=g.max_prompt_length, world_size=ctx.cfg.train.num_processes)
        ctx.log(f"GRPO batch as the trainer runs it: per_device_train_batch_size {a.per_device_train_batch_size} "
                f"(completions), steps_per_generation {a.steps_per_generation}, generation_batch_size "
                f"{a.generation_batch_size} = {a.generation_batch_size // a.num_generations} prompts x num_generations "
                f"{a.num_generations}, max_completion_length {a.max_completion_length}")
        share = g.vllm_gpu_memory_utilization if fast == "trl" else ctx.cfg.model.gpu_memory_utilization
        estimates.append(record_estimate(ctx, start_model, bits=4 if backend.quantized else 16, batch=batch,
                                         vllm=fast, vllm_share=share if fast else 0.0))

    trainer = training.train_with_fallbacks(ctx, build, knobs, training.grpo_fallbacks(), out / "checkpoints", on_built)
    callback.vram = record_peak(ctx, estimates[-1] if estimates else None, callback.step_times, key=vram_key)
    s = cache.stats
    ctx.log(f"judge: {s.calls} calls (one per distinct completion, shared by the {len(dims)} reward functions, "
            f"up to {s.peak_in_flight} at once), {s.cache_hits} cache hits, {s.failures} failed after retries "
            f"({s.unscored} completions left without a reward), {s.wall_s:.1f} s judging")
    if watch.reason:
        raise StageFailed(watch.reason)
    return trainer, callback


def doctor(ctx: StageContext, weights: dict[str, float], prefix: str = ""):
    """The health rules for this GRPO run (None when health.enabled is off), and the facts they read."""
    from engine.training.health_rules import Facts, HealthMonitor, HealthReporter

    facts = Facts(max_completion_length=None, weights=dict(weights))
    if not ctx.cfg.health.enabled:
        return None, facts
    return HealthReporter(ctx, HealthMonitor(ctx.cfg.health, facts), prefix), facts


def _tokenizer_source(ctx: StageContext, start: str) -> str:
    return ctx.cfg.model.base if ctx.cfg.model.base.startswith("demo:") else start


def start_model(ctx: StageContext, backend) -> str:
    """The SFT adapter merged into the base (the seed's sequential SFT then GRPO), or the base when there is none."""
    from engine.models.merging import merge_adapter
    from engine.models import loading as models

    base = models.base_path(ctx.cfg, ctx.run_dir, ctx.log, ctx.progress)
    adapter = ctx.run_dir / "sft" / "adapter"
    if not ctx.cfg.grpo.merge_sft:
        ctx.log("grpo.merge_sft is off: starting from the base model")
        return base
    if not adapter.exists():
        ctx.log("no SFT adapter in this run: starting GRPO from the base model", "warn")
        return base
    models.check_adapter(adapter)
    merged = merge_adapter(ctx.cfg, base, adapter, ctx.run_dir / "sft" / "merged", ctx.log)
    ctx.log(f"starting from the SFT adapter merged into the base ({merged})")
    return str(merged)
