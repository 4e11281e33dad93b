"""CPU threads for a stage worker: its share of the cores, so several workers (and the panel) do not oversubscribe."""

from __future__ import annotations

import os
import sys

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one, e.g. under taskset or a container)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return max(os.cpu_count() or 1, 1)


def thread_share(configured: int, ranks: int = 1) -> int:
    """`run.torch_threads` when set, else the cores divided among this stage's data-parallel ranks (at least 1)."""
    if configured > 0:
        return configured
    return max(usable_cores() // max(ranks, 1), 1)


def cap_threads(configured: int, ranks: int = 1) -> int:
    """Set the thread count before torch starts (torch reads OMP_NUM_THREADS at import; ranks inherit the
    environment), and through torch itself when it is already imported. Returns the count."""
    n = thread_share(configured, ranks)
    for var in THREAD_VARS:
        os.environ[var] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(n)
    return n
