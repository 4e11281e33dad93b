"""Following a run: one reader that brings the rows newer than the last seen. The panel, `aba run` and `aba tail` use it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.runner import supervisor as sup
from engine.registry import TRAINING_STAGES
from engine.store import EventRow, LogRow, RunStore, StageRow, StageStatus

CHUNK = 250_000  # metric rows per poll: a 1M-row history arrives in a few quick steps, not one long stall
LOG_CHUNK = 2_000


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
    """What changed since the last poll: built by the reader's thread, applied by whoever shows it."""

    run_dir: Path
    stages: list[StageRow]
    metrics: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]]
    metric_cursor: int
    logs: list[LogRow]
    log_cursor: int
    events: list[EventRow]
    samples: dict[str, list[dict]]
    more: bool  # a backlog remains: poll again at once
    active: bool = True  # a stage is running or the run's driver is alive: more rows may come
    polled_at: float = field(default_factory=time.time)
    oldest_metric_time: float | None = None  # commit times of the rows carried, for the latency benchmark
    # (stage, key) -> step: a resumed attempt redoes this step and later ones; drop them before adding `metrics`
    restarts: dict[tuple[str, str], float] = field(default_factory=dict)


class Follower:
    """Owned by one thread: its own connection, cursors and EMA state.

    The panel reads everything; the CLI asks for no metrics and no samples (it shows stages and logs), and `aba tail
    --stage` for one stage's logs only. A dead worker is marked
    crashed by whoever follows, panel or CLI (`supervisor.notice_crashes`).
    """

    def __init__(self, run_dir: Path, *, metrics: bool = True, samples: bool = True, log_stage: str | None = None):
        self.run_dir = run_dir
        self.store = RunStore(run_dir / "run.db", readonly=True)  # a crash it notices goes through its own writer
        self.want_metrics, self.want_samples, self.log_stage = metrics, samples, log_stage
        self.metric_cursor = 0
        self.log_cursor = 0
        self.event_cursor = 0
        self.sample_ids: dict[str, int] = {}
        self._ema: dict[tuple[str, str], float] = {}
        self._last: dict[tuple[str, str], tuple[int, int]] = {}  # (attempt, step) of the newest row read per key
        self._restarts: dict[tuple[str, str], float] = {}

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def poll(self) -> Delta:
        # Stages first: when they say the run is over, every row read after them is already written.
        stages = sup.notice_crashes(self.store)
        active = any(s.status == StageStatus.RUNNING for s in stages) or sup.run_driven(self.store)
        metrics, oldest, more = self._metrics()
        logs = self.store.logs_since(self.log_cursor, stage=self.log_stage, limit=LOG_CHUNK)
        if logs:
            self.log_cursor = logs[-1].id
        events = self.store.events(after_id=self.event_cursor)
        if events:
            self.event_cursor = events[-1].id
        samples = {}
        for stage in TRAINING_STAGES if self.want_samples else ():
            latest = self.store.samples(stage, limit=6)
            if latest and latest[0]["id"] != self.sample_ids.get(stage):
                self.sample_ids[stage] = latest[0]["id"]
                samples[stage] = latest
        restarts, self._restarts = self._restarts, {}
        return Delta(self.run_dir, stages, metrics, self.metric_cursor, logs, self.log_cursor, events, samples,
                     more=more or len(logs) == LOG_CHUNK, active=active, oldest_metric_time=oldest, restarts=restarts)

    def _metrics(self) -> tuple[dict, float | None, bool]:
        if not self.want_metrics:
            return {}, None, False
        rows = self.store.metrics_since(self.metric_cursor, limit=CHUNK)
        grouped: dict[tuple[str, str], tuple[list, list]] = {}
        for r in rows:
            key = (r.stage, r.key)
            steps, values = grouped.setdefault(key, ([], []))
            last = self._last.get(key)
            if last is not None and r.attempt > last[0] and r.step <= last[1]:
                # A resumed attempt redoes steps an earlier one wrote (the store has dropped those rows already).
                keep = [i for i, s in enumerate(steps) if s < r.step]
                steps[:], values[:] = [steps[i] for i in keep], [values[i] for i in keep]
                self._restarts[key] = min(float(r.step), self._restarts.get(key, float("inf")))
            self._last[key] = (r.attempt, r.step)
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
        return metrics, (rows[0].time if rows else None), len(rows) == CHUNK

    def follow(self, interval: float = 0.25, once: bool = False) -> Iterator[Delta]:
        """Deltas until the run stops and its backlog is read (`once`: until the backlog is read)."""
        while True:
            delta = self.poll()
            yield delta
            if not delta.more:
                if once or not delta.active:
                    return
                time.sleep(interval)
