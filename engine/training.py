"""What SFT, GRPO, smoke and Strategy B share: checkpoints, the OOM fallback ladder, the VRAM estimate."""

from __future__ import annotations

import gc
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.context import StageContext, StageFailed

MAX_FALLBACKS = 3
GB = 1024**3


def common_args(ctx: StageContext, output_dir: Path, logging_steps: int) -> dict[str, Any]:
    """TrainingArguments every stage shares: checkpoints, device and precision, seed, quiet logging."""
    import torch

    cpu = ctx.cfg.train.device == "cpu" or not torch.cuda.is_available()
    return {
        "output_dir": str(output_dir),
        "gradient_checkpointing": ctx.cfg.model.gradient_checkpointing,
        "logging_steps": logging_steps,
        "save_strategy": "steps",
        "save_steps": ctx.cfg.run.checkpoint_steps,
        "save_total_limit": 2,
        "report_to": "none",
        "seed": ctx.cfg.run.seed,
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


def train_with_fallbacks(
    ctx: StageContext, build: Callable[[dict[str, Any]], Any], knobs: dict[str, Any], fallbacks: list[Fallback],
    ckpt_dir: Path,
) -> Any:
    """Train; on CUDA out-of-memory, apply the next fallback and retry from the last checkpoint (at most 3 times)."""
    import torch

    used = 0
    while True:
        trainer = build(knobs)
        resume = latest_checkpoint(ckpt_dir)
        if resume:
            ctx.log(f"resuming from {Path(resume).name}")
        try:
            trainer.train(resume_from_checkpoint=resume)
            return trainer
        except Exception as err:
            if not is_oom(err):
                raise
            message = None
            while fallbacks and message is None:
                message = fallbacks.pop(0)(knobs)
            if used >= MAX_FALLBACKS or message is None:
                raise StageFailed(
                    f"out of GPU memory after {used} fallback(s), none left to try ({str(err).splitlines()[0][:160]})"
                ) from None
            used += 1
            ctx.event("fallback", f"CUDA out of memory; fallback {used}/{MAX_FALLBACKS}: {message}", knobs=dict(knobs))
            del trainer
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


# -- VRAM estimate ---------------------------------------------------------------------------


@dataclass
class VramEstimate:
    weights_gb: float
    lora_gb: float
    activations_gb: float
    logits_gb: float
    kv_cache_gb: float
    overhead_gb: float

    @property
    def total_gb(self) -> float:
        return self.weights_gb + self.lora_gb + self.activations_gb + self.logits_gb + self.kv_cache_gb + self.overhead_gb

    def as_dict(self) -> dict[str, float]:
        d = {k: round(v, 3) for k, v in self.__dict__.items()}
        d["total_gb"] = round(self.total_gb, 3)
        return d


def estimate_vram(
    model_cfg: Any, *, bits: int, lora_r: int, n_targets: int, seq_len: int, batch: int, gradient_checkpointing: bool,
    num_generations: int = 0, completion_len: int = 0, cuda_overhead_gb: float = 0.6,
) -> VramEstimate:
    """Peak VRAM of a LoRA training step from the model's shape. Rough by design; stored beside the measured peak.

    weights: transformer blocks at `bits` (+10% for 4-bit quantization state), embeddings and head in 16-bit;
    lora: adapter params with fp32 weight, grad and two Adam moments (16 bytes each);
    activations: per token, 2 hidden vectors per layer with checkpointing (18 without), bf16;
    logits: batch x seq x vocab in fp32, twice (logits and their grad);
    kv cache (GRPO generation): 2 x layers x kv_heads x head_dim per token, for every generation.
    """
    h = model_cfg.hidden_size
    layers = model_cfg.num_hidden_layers
    heads = model_cfg.num_attention_heads
    kv = getattr(model_cfg, "num_key_value_heads", heads) or heads
    hd = getattr(model_cfg, "head_dim", None) or h // heads
    inter = model_cfg.intermediate_size
    vocab = model_cfg.vocab_size
    attn = h * heads * hd * 2 + h * kv * hd * 2
    mlp = 3 * h * inter
    block_params = layers * (attn + mlp)
    embed = vocab * h * (1 if getattr(model_cfg, "tie_word_embeddings", False) else 2)
    per_param = bits / 8 * (1.1 if bits == 4 else 1.0)
    weights = block_params * per_param + embed * 2
    lora_params = layers * n_targets * lora_r * (h + max(h, inter)) / 1  # rank x (in + out), upper bound per target
    lora = lora_params * 16
    rows = batch * max(num_generations, 1)
    tokens = rows * seq_len
    act = tokens * h * 2 * (2 * layers if gradient_checkpointing else 18 * layers)
    logits = tokens * vocab * 4 * 2
    kv_cache = 2 * layers * kv * hd * 2 * (num_generations * (seq_len + completion_len)) if num_generations else 0.0
    return VramEstimate(weights / GB, lora / GB, act / GB, logits / GB, kv_cache / GB, cuda_overhead_gb)


def record_estimate(ctx: StageContext, model_path: str, *, bits: int, seq_len: int, batch: int,
                    num_generations: int = 0, completion_len: int = 0) -> VramEstimate | None:
    """Estimate before launch, warn when it exceeds the GPU's free memory, keep it for comparison afterwards."""
    from transformers import AutoConfig

    try:
        mcfg = AutoConfig.from_pretrained(model_path)
    except Exception as err:  # an estimate must never stop a run
        ctx.log(f"VRAM estimate skipped: cannot read the model config ({type(err).__name__})", "warn")
        return None
    est = estimate_vram(
        mcfg, bits=bits, lora_r=ctx.cfg.model.lora_r, n_targets=len(ctx.cfg.model.target_modules), seq_len=seq_len,
        batch=batch, gradient_checkpointing=ctx.cfg.model.gradient_checkpointing, num_generations=num_generations,
        completion_len=completion_len,
    )
    from engine.gpu import VramSampler

    free = VramSampler(ctx.cfg.gpu.device_index).free_mb()
    msg = f"VRAM estimate for {ctx.name}: {est.total_gb:.2f} GB peak"
    if free is not None:
        msg += f" (GPU has {free / 1024:.2f} GB free)"
        if est.total_gb * 1024 > free:
            ctx.event("warning", msg + ": the estimate exceeds free memory; expect the OOM fallbacks", **est.as_dict())
    ctx.event("estimate", msg, **est.as_dict())
    ctx.metric(0, **{"vram/estimate_mb": est.total_gb * 1024})
    return est


def record_peak(ctx: StageContext, est: VramEstimate | None, step_times: list[float] | None = None) -> dict[str, Any]:
    import torch

    peak = torch.cuda.max_memory_allocated() / GB if torch.cuda.is_available() else None
    data = {"estimate_gb": est.total_gb if est else None, "measured_peak_gb": peak}
    if step_times:
        ordered = sorted(step_times)
        data["median_step_s"] = ordered[len(ordered) // 2]
    ctx.result("vram", ctx.name, data)
    if peak is not None and est is not None:
        ctx.log(f"VRAM: estimated {est.total_gb:.2f} GB, measured peak {peak:.2f} GB")
    return data
