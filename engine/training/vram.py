"""VRAM: sampling through NVML (nvidia-ml-py) and torch's peak counter as `vram/*` metrics; the peak estimate before launch."""

from __future__ import annotations

import os
import sys
from typing import Any

from engine.context import StageContext
from engine.training.estimate import Batch, VramEstimate, estimate_vram

__all__ = ["Batch", "VramEstimate", "VramSampler", "estimate_vram", "imported_torch", "record_estimate", "record_peak"]

MB = 1024 * 1024
GB = 1024**3


def imported_torch() -> Any:
    """torch when the stage has finished importing it, else None; never imports it.

    The monitor thread samples while the stage thread may still be importing torch: `sys.modules` then holds a
    partially initialised module (no `torch.cuda` yet). Python marks such a module's spec `_initializing`, the same
    flag behind its "partially initialized module" errors, so both torch and torch.cuda are checked.
    """
    for name in ("torch", "torch.cuda"):
        module = sys.modules.get(name)
        spec = getattr(module, "__spec__", None)
        if module is None or spec is None or getattr(spec, "_initializing", False):
            return None
    return sys.modules["torch"]


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
        torch = imported_torch()
        # Only once the stage itself has started CUDA: reading counters first would create a context from this thread.
        if torch is not None and torch.cuda.is_initialized():
            out["vram/torch_peak_mb"] = torch.cuda.max_memory_allocated() / MB
            out["vram/torch_reserved_mb"] = torch.cuda.memory_reserved() / MB
        return out

    def free_mb(self) -> float | None:
        if not self.available:
            return None
        info = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
        return (info.total - info.used) / MB

    def total_gb(self) -> float | None:
        if not self.available:
            return None
        return self._nvml.nvmlDeviceGetMemoryInfo(self._handle).total / GB


# -- the estimate, recorded beside what was measured ------------------------------------------


def record_estimate(ctx: StageContext, model_path: str, *, bits: int, batch: Batch, vllm: str = "",
                    vllm_share: float = 0.0) -> VramEstimate | None:
    """Estimate the peak for the batch the trainer really runs; warn when it exceeds the GPU's free memory."""
    from transformers import AutoConfig

    try:
        mcfg = AutoConfig.from_pretrained(model_path)
    except Exception as err:  # an estimate must never stop a run
        ctx.log(f"VRAM estimate skipped: cannot read the model config ({type(err).__name__})", "warn")
        return None
    sampler = VramSampler(ctx.cfg.gpu.device_index)
    est = estimate_vram(
        mcfg, bits=bits, lora_r=ctx.cfg.model.lora_r, target_modules=list(ctx.cfg.model.target_modules), batch=batch,
        gradient_checkpointing=ctx.cfg.model.gradient_checkpointing, vllm=vllm, vllm_share=vllm_share,
        card_gb=sampler.total_gb(),
    )
    free = sampler.free_mb()
    on_gpu = sampler.available
    msg = (f"{'VRAM' if on_gpu else 'GPU memory'} estimate for {ctx.name}: {est.total_gb:.2f} GB peak for {batch.rows} "
           f"row(s) x {batch.seq_len} tokens"
           + (f", {batch.generations} completions generated at once" if batch.generations else "")
           + ("" if on_gpu else " (on a CUDA card; this run trains without one)"))
    if free is not None:
        msg += f" (GPU has {free / 1024:.2f} GB free)"
        if est.total_gb * 1024 > free:
            ctx.event("warning", msg + ": the estimate exceeds free memory; expect the OOM fallbacks", **est.as_dict())
    # Without a GPU the estimate is kept (the report compares it with a later GPU run) but not logged: it is no
    # news on a CPU-only run.
    ctx.event("estimate", msg, quiet=not on_gpu, **est.as_dict(), rows=batch.rows, seq_len=batch.seq_len,
              generations=batch.generations)
    ctx.metric(0, **{"vram/estimate_mb": est.total_gb * 1024})
    return est


def measured_peaks(ctx: StageContext) -> dict[str, float | None]:
    """torch's peak allocation in this process and the highest NVML reading the monitor stored for this stage (GB)."""
    import torch

    torch_peak = torch.cuda.max_memory_allocated() / GB if torch.cuda.is_initialized() else None
    _, _, used = ctx.store.metric_series(ctx.name, "vram/used_mb")
    nvml = max((v for v in used if v is not None), default=None)
    return {"torch_peak_gb": torch_peak, "nvml_peak_gb": nvml / 1024 if nvml is not None else None}


def record_peak(ctx: StageContext, est: VramEstimate | None, step_times: list[float] | None = None,
                key: str | None = None) -> dict[str, Any]:
    peaks = measured_peaks(ctx)
    data: dict[str, Any] = {"estimate_gb": est.total_gb if est else None, "measured_peak_gb": peaks["torch_peak_gb"],
                            **peaks, "estimate": est.as_dict() if est else None}
    if step_times:
        ordered = sorted(step_times)
        data["median_step_s"] = ordered[len(ordered) // 2]
        data["slowest_step_s"] = ordered[-1]
    ctx.result("vram", key or ctx.name, data)
    if peaks["torch_peak_gb"] is not None and est is not None:
        nvml = f", NVML {peaks['nvml_peak_gb']:.2f} GB" if peaks["nvml_peak_gb"] is not None else ""
        ctx.log(f"VRAM: estimated {est.total_gb:.2f} GB, measured torch peak {peaks['torch_peak_gb']:.2f} GB{nvml}")
    return data


def peak_rss_mb() -> float | None:
    """This process's peak resident memory in MB (None where the platform does not say, e.g. Windows)."""
    if sys.platform == "win32":
        return None
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20  # macOS reports bytes
