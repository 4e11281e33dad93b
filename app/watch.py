"""What the panel knows about a run, and the poll that brings it up to date (rows newer than the last seen)."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.runner import supervisor as sup
from engine.stages.registry import TRAINING_STAGES
from engine.store import EventRow, LogRow, RunStore, StageRow

CHUNK = 250_000  # rows per poll: a 1M-row history arrives in a few quick steps, not one long stall


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

    def view(self, smooth: bool = False) -> tuple[np.ndarray, np.ndarray]:
        return self.steps[: self.n], (self.ema if smooth else self.values)[: self.n]

    def last(self) -> float | None:
        if not self.n:
            return None
        v = self.values[self.n - 1]
        return None if np.isnan(v) else float(v)


def ema_of(values: np.ndarray, start: float, alpha: float = 0.1) -> tuple[np.ndarray, float]:
    """EMA continuing from `start` (NaN: begin at the first value); NaNs carry the previous EMA."""
    out = np.empty(len(values))
    last = start
    for i, v in enumerate(values.tolist()):
        if v == v:  # not NaN
            last = v if last != last else last + alpha * (v - last)
        out[i] = last
    return out, last


@dataclass
class Delta:
    """What changed since the last poll, built in the poll thread and applied on the UI thread."""

    run_dir: Path
    stages: list[StageRow]
    metrics: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]]
    metric_cursor: int
    logs: list[LogRow]
    log_cursor: int
    events: list[EventRow]
    samples: dict[str, list[dict]]
    more: bool  # a backlog remains: poll again at once
    polled_at: float = field(default_factory=time.time)
    oldest_metric_time: float | None = None  # commit times of the rows carried, for the latency benchmark


class Poller:
    """Owned by the poll thread: its own connection, cursors and EMA state."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.store = RunStore(run_dir / "run.db", readonly=True)
        self.metric_cursor = 0
        self.log_cursor = 0
        self.event_cursor = 0
        self.sample_ids: dict[str, int] = {}
        self._ema: dict[tuple[str, str], float] = {}

    def close(self) -> None:
        self.store.close()

    def poll(self) -> Delta:
        stages = sup.notice_crashes(self.store)  # marks a dead worker crashed, as anyone looking does
        rows = self.store.metrics_since(self.metric_cursor, limit=CHUNK)
        grouped: dict[tuple[str, str], tuple[list, list]] = {}
        oldest = rows[0].time if rows else None
        for r in rows:
            steps, values = grouped.setdefault((r.stage, r.key), ([], []))
            steps.append(r.step)
            values.append(np.nan if r.value is None else r.value)
        if rows:
            self.metric_cursor = rows[-1].id
        metrics = {}
        for key, (steps, values) in grouped.items():
            v = np.asarray(values, dtype=float)
            ema, last = ema_of(v, self._ema.get(key, float("nan")))
            self._ema[key] = last
            metrics[key] = (np.asarray(steps, dtype=float), v, ema)
        logs = self.store.logs_since(self.log_cursor, limit=2000)
        if logs:
            self.log_cursor = logs[-1].id
        events = self.store.events(after_id=self.event_cursor)
        if events:
            self.event_cursor = events[-1].id
        samples = {}
        for stage in TRAINING_STAGES:
            latest = self.store.samples(stage, limit=6)
            if latest and latest[0]["id"] != self.sample_ids.get(stage):
                self.sample_ids[stage] = latest[0]["id"]
                samples[stage] = latest
        return Delta(self.run_dir, stages, metrics, self.metric_cursor, logs, self.log_cursor, events, samples,
                     more=len(rows) == CHUNK, oldest_metric_time=oldest)


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

    def reset(self, run_dir: Path | None) -> None:
        self.__init__()  # type: ignore[misc]
        self.run_dir = run_dir

    def apply(self, delta: Delta) -> list[tuple[StageRow, str]]:
        """Fold a delta in; returns (stage, old status) for stages whose status changed."""
        old = {s.name: s.status for s in self.stages}
        self.stages = delta.stages
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
