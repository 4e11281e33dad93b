"""VRAM sampling through NVML (nvidia-ml-py) and torch's peak counter, stored as `vram/*` metrics."""

from __future__ import annotations

import os
import sys
from typing import Any

MB = 1024 * 1024


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
