"""SFT once: runs whose SFT inputs are identical share one SFT adapter.

The inputs are the model section (base, LoRA shape, backend, precision), the SFT section, the train section, the
seed and the SFT rows themselves (the chosen traces that clear sft.min_score, as the trainer would see them). Their
sha256 names a folder in `RUNS/sft-cache/`; the first run to train publishes its adapter there (a copy renamed into
place, so a half-written adapter is never found), and every later run with the same hash copies it into its own
`sft/adapter`, which is what GRPO then merges and trains on."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from engine.config import Config, to_dict

CACHE_DIR = "sft-cache"
DONE = "done.json"


def inputs_hash(cfg: Config, rows: list[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for part in (to_dict(cfg.model), to_dict(cfg.sft), to_dict(cfg.train), cfg.run.seed):
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
    for row in rows:
        h.update(json.dumps(row, sort_keys=True).encode())
    return h.hexdigest()


def cache_dir(runs_root: Path, key: str) -> Path:
    return runs_root / CACHE_DIR / key[:24]


def find(runs_root: Path, key: str) -> dict[str, Any] | None:
    """The cached adapter for these inputs ({"path", "source_run", ...}), or None."""
    folder = cache_dir(runs_root, key)
    try:
        info = json.loads((folder / DONE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if info.get("hash") != key or not (folder / "adapter").is_dir():
        return None
    return {**info, "path": str(folder / "adapter")}


def publish(runs_root: Path, key: str, adapter: Path, source_run: str, steps: int) -> Path | None:
    """Copy a freshly trained adapter into the cache (no-op when another run published these inputs first)."""
    folder = cache_dir(runs_root, key)
    if (folder / DONE).exists():
        return None
    tmp = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(adapter, tmp / "adapter")
    (tmp / DONE).write_text(json.dumps({"hash": key, "source_run": source_run, "steps": steps, "time": time.time()}),
                            encoding="utf-8")
    try:
        os.replace(tmp, folder)  # atomic: the folder appears complete or not at all
    except OSError:  # published meanwhile by a run on another GPU
        shutil.rmtree(tmp, ignore_errors=True)
        return None
    return folder


def take(cached: dict[str, Any], dest: Path) -> None:
    """Copy the cached adapter into this run's `sft/adapter` (replacing a partial one)."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(cached["path"], tmp)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
