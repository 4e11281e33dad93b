"""VRAM: sampling through NVML (nvidia-ml-py) and torch's peak counter as `vram/*` metrics; the peak estimate before launch."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

from engine.runner.context import StageContext

MB = 1024 * 1024
GB = 1024**3


class VramSampler:
    """Samples one GPU. NVML is initialised once and handles are cached; without a GPU it says so once and stays quiet."""

    def __init__(self, device_index: int = 0):
        self.device_index = device_index
        self.available = False
        self.reason = ""
        self._nvml: Any = None
        self._handle: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
            self._nvml = pynvml
            self.available = True
            name = pynvml.nvmlDeviceGetName(self._handle)
            self.reason = f"NVML: sampling GPU {device_index} ({name.decode() if isinstance(name, bytes) else name})"
        except Exception as err:  # NVMLError_LibraryNotFound, DriverNotLoaded, ImportError...
            self.reason = f"no NVIDIA GPU visible ({type(err).__name__}): VRAM sampling off"

    def sample(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.available:
            try:
                info = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
                out["vram/used_mb"] = info.used / MB
                out["vram/total_mb"] = info.total / MB
                out["vram/headroom_mb"] = (info.total - info.used) / MB
                pid = os.getpid()
                for proc in self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle):
                    if proc.pid == pid and proc.usedGpuMemory is not None:
                        out["vram/process_mb"] = proc.usedGpuMemory / MB
            except Exception as err:
                # One failure turns sampling off rather than retrying every second.
                self.available = False
                self.reason = f"NVML stopped answering ({type(err).__name__}): VRAM sampling off"
        torch = sys.modules.get("torch")  # never import torch just to sample
        if torch is not None and torch.cuda.is_available():
            out["vram/torch_peak_mb"] = torch.cuda.max_memory_allocated() / MB
            out["vram/torch_reserved_mb"] = torch.cuda.memory_reserved() / MB
        return out

    def free_mb(self) -> float | None:
        if not self.available:
            return None
        info = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
        return (info.total - info.used) / MB


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
