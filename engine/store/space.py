"""Disk space: a small spare file kept in each run folder, given up so that a stage stopped by a full disk can
still record why; what a full disk looks like from Python, SQLite, torch or safetensors; the free-space check."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.store.db import disk_full, free_space, human_bytes

SPARE_NAME = ".aba-spare"
SPARE_BYTES = 4 << 20  # a few SQLite transactions in WAL, a log line and the final status: the record of the stop
LOW_SPACE = 8 << 20  # a write error with less than this free on the run's disk is the disk's fault


def make_spare(run_dir: Path) -> bool:
    """Keep SPARE_BYTES of real blocks in the run folder (best effort: False where there is no room)."""
    path = Path(run_dir) / SPARE_NAME
    try:
        if path.exists() and path.stat().st_size >= SPARE_BYTES:
            return True
        with open(path, "wb") as f:
            f.write(b"\0" * SPARE_BYTES)  # written, not sparse: the blocks are really taken
            f.flush()
            os.fsync(f.fileno())
        return True
    except OSError:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass
        return False


@contextmanager
def spare_released(run_dir: Path) -> Iterator[None]:
    """Give the spare's blocks back for the writes inside, then take them again where there is room."""
    path = Path(run_dir) / SPARE_NAME
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass
    try:
        yield
    finally:
        make_spare(run_dir)


def full_disk_failure(err: BaseException, run_dir: Path) -> bool:
    """Was this failure the disk filling up? ENOSPC or SQLite's 'disk is full' anywhere in the chain, or a write
    error of another library (torch's 'file write failed') while the run's disk is all but full."""
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if disk_full(e):
            return True
        e = e.__cause__ or e.__context__
    free = free_space(run_dir)
    return free is not None and free < LOW_SPACE


def space_needed_line(run_dir: Path, needed: int, what: str) -> str | None:
    """A warning when `what` (about `needed` bytes) will not fit on the run's disk, else None."""
    free = free_space(run_dir)
    if free is None or free >= needed:
        return None
    return (f"{what} needs about {human_bytes(needed)} but the disk holding {run_dir} has {human_bytes(free)} free:"
            f" free {human_bytes(needed - free)} or the stage will stop when the disk fills")
