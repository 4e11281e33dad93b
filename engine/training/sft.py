"""The SFT training loop: QLoRA SFT with TRL's SFTTrainer (Unsloth's on that backend) on the chosen traces.
Shared by the sft and smoke stages (each a thin `run(ctx)` in engine/stages/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.context import StageContext, StageFailed


def sft_args(ctx: StageContext, knobs: dict[str, Any], out: Path, max_steps: int | None = None):
    from trl import SFTConfig

    from engine.training.trainer import common_args

    s = ctx.cfg.sft
    return SFTConfig(
        **common_args(ctx, out, s.logging_steps),
        learning_rate=s.learning_rate,
        num_train_epochs=s.num_train_epochs,
        max_steps=max_steps if max_steps is not None else s.max_steps,
        max_length=knobs["max_seq_length"],
        per_device_train_batch_size=knobs["per_device_train_batch_size"],
        gradient_accumulation_steps=knobs["gradient_accumulation_steps"],
        completion_only_loss=True,  # loss on the assistant turn only
    )


def train_sft(ctx: StageContext, backend, base: str, out: Path, max_steps: int | None = None, rows: list[dict] | None = None,
              vram_key: str | None = None):
    """Train an SFT LoRA into `out`; returns (trainer, callback). Shared by the sft and smoke stages. callback.vram
    holds the estimate (from the trainer's own args) and the measured peaks."""
    from datasets import Dataset

    from engine.models import loading as models
    from engine.training import trainer as training
    from engine.training import data as traindata
    from engine.training.callbacks import StoreCallback
    from engine.training.estimate import batch_from_args
    from engine.training.vram import record_estimate, record_peak

    s = ctx.cfg.sft
    if rows is None:
        rows = traindata.sft_rows(ctx.store, ctx.cfg.grpo.reward_weights, s.min_score, ctx.log,
                                  traindata.demo_data_reason(ctx.cfg, ctx.name))
    if not rows:
        raise StageFailed(f"no chosen traces clear sft.min_score = {s.min_score}; lower it or judge more traces")
    dataset = Dataset.from_list(rows)
    knobs = {
        "per_device_train_batch_size": s.per_device_train_batch_size,
        "gradient_accumulation_steps": s.gradient_accumulation_steps,
        "max_seq_length": s.max_seq_length,
    }
    callback = StoreCallback(ctx)
    estimates: list = []

    def on_built(trainer) -> None:
        batch = batch_from_args(trainer.args, prompt_len=s.max_seq_length)
        estimates.append(record_estimate(ctx, base, bits=4 if backend.quantized else 16, batch=batch))

    def build(k: dict[str, Any]):
        from trl import SFTTrainer

        model, tok, peft_cfg = models.load_for_training(ctx.cfg, backend, base, k["max_seq_length"])
        return SFTTrainer(
            model=model, args=sft_args(ctx, k, out / "checkpoints", max_steps), train_dataset=dataset,
            processing_class=tok, peft_config=peft_cfg, callbacks=[callback],
        )

    trainer = training.train_with_fallbacks(ctx, build, knobs, training.sft_fallbacks(), out / "checkpoints", on_built)
    callback.vram = record_peak(ctx, estimates[-1] if estimates else None, callback.step_times, key=vram_key)
    return trainer, callback
