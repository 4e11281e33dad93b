"""What a stage gets: its config section, its folder, and helpers that write to the run database."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import Config
from engine.progress import ETA_KEY, ETA_KIND, EtaMeter
from engine.store import RunStore


ETA_EVERY_S = 1.0


class StageFailed(Exception):
    """A stage ends with a reason the user should read (not a bug)."""


class StageCancelled(Exception):
    """Raised at a step boundary when the user asked the stage to stop."""


@dataclass
class StageContext:
    name: str
    run_dir: Path
    cfg: Config
    store: RunStore
    cancel_event: threading.Event = field(default_factory=threading.Event)
    step: int = 0  # the stage's latest step, for VRAM samples taken between steps
    primary: bool = True  # False on ranks > 0 of a data-parallel stage: they train but report nothing
    attempt: int = 0  # which attempt of the stage this is (the driver numbers them; 0 outside a worker)
    _eta: EtaMeter = field(default_factory=EtaMeter, repr=False)
    _eta_written: float = -1e9

    @property
    def folder(self) -> Path:
        path = self.run_dir / self.name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    # -- emit helpers -----------------------------------------------------------------------

    def metric(self, step: int, **values: float | None) -> None:
        self.metrics(step, values)

    def metrics(self, step: int, values: dict[str, float | None]) -> None:
        self.step = max(self.step, int(step))
        if values and self.primary:
            self.store.add_metrics(self.name, int(step), values)

    def progress(self, done: float, total: float | None = None, label: str | None = None) -> None:
        """n of N done; the time left, from this stage's own recent rate, is kept beside it (a `progress` result,
        written at most once a second and at the end; see engine.progress)."""
        if not self.primary:
            return
        self.store.set_progress(self.name, done, total, label)
        now = time.monotonic()
        eta = self._eta.update(done, total, now)
        if eta is not None and (now - self._eta_written >= ETA_EVERY_S or (total and done >= total)):
            self._eta_written = now
            self.store.put_result(self.name, ETA_KIND, ETA_KEY,
                                  {"eta_s": eta, "time": time.time(), "done": done, "total": total})

    def log(self, message: str, level: str = "info") -> None:
        if not self.primary:
            return
        print(f"[{self.name}] {level}: {message}", flush=True)
        self.store.log(self.name, message, level)

    def event(self, kind: str, message: str, *, quiet: bool = False, **data: Any) -> None:
        """A visible happening (backend chosen, fallback taken, estimate made): logged (unless quiet) and listed in
        `aba status`."""
        if not quiet:
            self.log(message, "warn" if kind == "fallback" else "info")
        if self.primary:
            self.store.event(self.name, kind, message, data)

    def artifact(self, kind: str, path: str | Path, **meta: Any) -> None:
        if self.primary:
            self.store.add_artifact(self.name, kind, path, meta)

    def result(self, kind: str, key: str, data: dict) -> None:
        if self.primary:
            self.store.put_result(self.name, kind, key, data)

    def sample(self, step: int, prompt: str, completion: str, scores: dict, reward: float | None) -> None:
        if self.primary:
            self.store.add_sample(self.name, step, prompt, completion, scores, reward)

    # -- cancel and faults ------------------------------------------------------------------

    def should_stop(self) -> bool:
        return self.cancel_event.is_set()

    def check_cancel(self) -> None:
        if self.cancel_event.is_set():
            raise StageCancelled()

    def fault(self, step: int) -> None:
        """Test hook, off by default: ABA_FAULT=oom@grpo:3 raises a CUDA OOM at step 3 of grpo (once per attempt chain)."""
        spec = os.environ.get("ABA_FAULT", "")
        for item in filter(None, spec.split(",")):
            kind, _, where = item.partition("@")
            stage, _, at = where.partition(":")
            if stage != self.name or not at or int(at) != step:
                continue
            marker = self.folder / f".fault-{kind}-{at}"
            if marker.exists():
                continue  # each fault fires once, so the fallback's retry can pass
            marker.write_text("fired")
            if kind == "oom":
                import torch

                raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (ABA_FAULT injected at {self.name} step {step})")
            if kind == "crash":
                os._exit(70)
            raise RuntimeError(f"ABA_FAULT {kind} at {self.name} step {step}")
