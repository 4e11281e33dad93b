"""What SFT, GRPO, smoke and Strategy B share: checkpoints, the OOM fallback ladder, freeing a trainer's memory."""

from __future__ import annotations

import gc
import re
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.context import StageContext, StageFailed

MAX_FALLBACKS = 3
GB = 1024**3


def common_args(ctx: StageContext, output_dir: Path, logging_steps: int) -> dict[str, Any]:
    """TrainingArguments every stage shares: checkpoints, device and precision, seed, quiet logging."""
    import torch

    from engine.training import trackers

    cpu = ctx.cfg.train.device == "cpu" or not torch.cuda.is_available()
    return {
        "output_dir": str(output_dir),
        "gradient_checkpointing": ctx.cfg.model.gradient_checkpointing,
        "logging_steps": logging_steps,
        "save_strategy": "steps",
        "save_steps": ctx.cfg.run.checkpoint_steps,
        "save_total_limit": 2,
        **trackers.args_for(ctx),  # report_to "none" unless run.report_to names trackers
        "seed": ctx.cfg.run.seed,
        "data_seed": ctx.cfg.run.seed,  # the sampler's shuffle: the same order of examples in every run
        "use_cpu": cpu,
        "bf16": not cpu and ctx.cfg.model.dtype == "bfloat16",
        "fp16": not cpu and ctx.cfg.model.dtype == "float16",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }


def latest_checkpoint(folder: Path) -> str | None:
    """The newest complete `checkpoint-N` folder (one with trainer_state.json), or None."""
    if not folder.exists():
        return None
    found = []
    for path in folder.iterdir():
        m = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if m and (path / "trainer_state.json").exists():
            found.append((int(m.group(1)), path))
    return str(max(found)[1]) if found else None


def is_oom(err: BaseException) -> bool:
    import torch

    return isinstance(err, torch.cuda.OutOfMemoryError) or "CUDA out of memory" in str(err)


Fallback = Callable[[dict[str, Any]], str | None]


def grpo_fallbacks() -> list[Fallback]:
    """The seed's risk register: num_generations 4 -> 2, then max_completion_length halved (not below 256)."""

    def fewer_generations(k: dict[str, Any]) -> str | None:
        if k["num_generations"] > 2:
            old, k["num_generations"] = k["num_generations"], 2
            return f"num_generations {old} -> 2"
        return None

    def shorter_completions(k: dict[str, Any]) -> str | None:
        if k["max_completion_length"] // 2 >= 256:
            old = k["max_completion_length"]
            k["max_completion_length"] = old // 2
            return f"max_completion_length {old} -> {old // 2}"
        return None

    return [fewer_generations, shorter_completions, shorter_completions]


def sft_fallbacks() -> list[Fallback]:
    """Halve the per-device batch and double accumulation (same effective batch), then shorten sequences."""

    def smaller_batch(k: dict[str, Any]) -> str | None:
        if k["per_device_train_batch_size"] > 1:
            b, a = k["per_device_train_batch_size"], k["gradient_accumulation_steps"]
            k["per_device_train_batch_size"], k["gradient_accumulation_steps"] = b // 2, a * 2
            return f"per_device_train_batch_size {b} -> {b // 2}, gradient_accumulation_steps {a} -> {a * 2}"
        return None

    def shorter_seq(k: dict[str, Any]) -> str | None:
        if k["max_seq_length"] // 2 >= 256:
            old = k["max_seq_length"]
            k["max_seq_length"] = old // 2
            return f"max_seq_length {old} -> {old // 2}"
        return None

    return [smaller_batch, smaller_batch, shorter_seq, shorter_seq]


def release(trainer: Any) -> None:
    """Drop what a trainer holds on the GPU (model, optimizer, scheduler, accelerate's prepared objects).

    Called on a trainer that failed or is done, before anything else needs the memory (the next attempt, a merge).
    """
    accelerator = getattr(trainer, "accelerator", None)
    if accelerator is not None:
        accelerator.free_memory()  # accelerate's own reset of its prepared models/optimizers/schedulers
    for name in ("model", "model_wrapped", "optimizer", "lr_scheduler", "ref_model"):
        if hasattr(trainer, name):
            setattr(trainer, name, None)


def free_memory() -> None:
    """Collect garbage (trainers hold reference cycles) and hand cached CUDA blocks back to the driver."""
    import torch

    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def train_with_fallbacks(
    ctx: StageContext, build: Callable[[dict[str, Any]], Any], knobs: dict[str, Any], fallbacks: list[Fallback],
    ckpt_dir: Path, on_built: Callable[[Any], None] | None = None,
) -> Any:
    """Train; on CUDA out-of-memory, free the failed trainer, apply the next fallback and retry from the last
    checkpoint (at most 3 times). `on_built(trainer)` sees each trainer before it trains (the estimate reads its args).

    Nothing is freed inside the `except` block: there the exception's traceback still holds every frame of the
    failed step, and through them the trainer, its model, optimizer and activations. The block only records what
    happened and clears those frames; the trainer is released after it, before the next build.
    """
    from transformers import set_seed

    used = 0
    while True:
        # TRL wraps the model in its LoRA before Trainer.__init__ seeds: seed first, so the LoRA's initial weights
        # never depend on what ran earlier in the process.
        set_seed(ctx.cfg.run.seed)
        trainer = build(knobs)
        if on_built is not None:
            on_built(trainer)
        resume = latest_checkpoint(ckpt_dir)
        if resume:
            ctx.log(f"resuming from {Path(resume).name}")
        try:
            trainer.train(resume_from_checkpoint=resume)
            return trainer
        except Exception as err:
            if not is_oom(err):
                raise
            failure = str(err).splitlines()[0][:160]
            traceback.clear_frames(err.__traceback__)
        release(trainer)
        del trainer
        free_memory()
        message = None
        while fallbacks and message is None:
            message = fallbacks.pop(0)(knobs)
        if used >= MAX_FALLBACKS or message is None:
            raise StageFailed(f"out of GPU memory after {used} fallback(s), none left to try ({failure})")
        used += 1
        ctx.event("fallback", f"CUDA out of memory; fallback {used}/{MAX_FALLBACKS}: {message}", knobs=dict(knobs))
