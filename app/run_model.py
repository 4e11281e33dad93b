"""What the panel knows about a run: the UI thread's model, folded from the deltas `engine.runner.follow` reads."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np

from engine.runner.follow import Delta
from engine.store import EventRow, LogRow, StageRow


class Series:
    """A growable (step, value) column pair with its EMA, appended in place; NaN marks a null value."""

    __slots__ = ("steps", "values", "ema", "n")

    def __init__(self) -> None:
        self.steps = np.empty(64)
        self.values = np.empty(64)
        self.ema = np.empty(64)
        self.n = 0

    def extend(self, steps: np.ndarray, values: np.ndarray, ema: np.ndarray) -> None:
        need = self.n + len(steps)
        if need > len(self.steps):
            cap = max(need, 2 * len(self.steps))
            for name in ("steps", "values", "ema"):
                arr = np.empty(cap)
                arr[: self.n] = getattr(self, name)[: self.n]
                setattr(self, name, arr)
        self.steps[self.n : need] = steps
        self.values[self.n : need] = values
        self.ema[self.n : need] = ema
        self.n = need

    def drop_from(self, step: float) -> None:
        """Forget the points at `step` and after (a resumed attempt writes them again)."""
        self.n = int(np.searchsorted(self.steps[: self.n], step, side="left")) if self.n else 0

    def view(self, smooth: bool = False) -> tuple[np.ndarray, np.ndarray]:
        return self.steps[: self.n], (self.ema if smooth else self.values)[: self.n]

    def last(self) -> float | None:
        if not self.n:
            return None
        v = self.values[self.n - 1]
        return None if np.isnan(v) else float(v)


class RunModel:
    """The UI thread's picture of the open run. Only the UI thread touches it."""

    def __init__(self) -> None:
        self.run_dir: Path | None = None
        self.stages: list[StageRow] = []
        self.series: dict[tuple[str, str], Series] = {}
        self.logs: deque[LogRow] = deque(maxlen=2000)
        self.events: list[EventRow] = []
        self.samples: dict[str, list[dict]] = {}
        self.version = 0
        self.problem: str | None = None  # the database cannot be read: why (shown instead of the stages)

    def reset(self, run_dir: Path | None) -> None:
        self.__init__()  # type: ignore[misc]
        self.run_dir = run_dir

    def apply(self, delta: Delta) -> list[tuple[StageRow, str]]:
        """Fold a delta in; returns (stage, old status) for stages whose status changed."""
        old = {s.name: s.status for s in self.stages}
        self.problem = None
        self.stages = delta.stages
        for key, step in delta.restarts.items():
            if key in self.series:
                self.series[key].drop_from(step)
        for key, (steps, values, ema) in delta.metrics.items():
            self.series.setdefault(key, Series()).extend(steps, values, ema)
        self.logs.extend(delta.logs)
        self.events.extend(delta.events)
        self.samples.update(delta.samples)
        self.version += 1
        return [(s, old[s.name]) for s in self.stages if s.name in old and old[s.name] != s.status]

    def keys(self, stage: str) -> list[str]:
        return sorted(k for (s, k) in self.series if s == stage)

    def get(self, stage: str, key: str) -> Series | None:
        return self.series.get((stage, key))

    def status_key(self, *names: str) -> tuple:
        """The statuses of these stages, to tell when results worth reloading may have changed."""
        return tuple((s.name, s.status) for s in self.stages if s.name in names)

    def stage(self, name: str) -> StageRow | None:
        return next((s for s in self.stages if s.name == name), None)
