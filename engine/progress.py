"""How far a stage is: n/N and the time left from the stage's own rate, said the same way by the panel and the CLI."""

from __future__ import annotations

import time
from collections import deque

# StageContext.progress keeps the time left, from the stage's recent rate, as one result row per stage (kind
# "progress", key "eta"): not a metric, so metric series stay the same from run to run (the ETA is wall-clock).
ETA_KIND, ETA_KEY = "progress", "eta"
WINDOW = 30  # progress points the rate is measured over (recent pace, not the average since the start)


class EtaMeter:
    """Seconds left from the last WINDOW distinct progress points. Starts over when the total changes or done falls
    (a stage that builds the demo model, then trains, reports two jobs one after the other)."""

    def __init__(self) -> None:
        self.points: deque[tuple[float, float]] = deque(maxlen=WINDOW)
        self.total: float | None = None

    def update(self, done: float, total: float | None, now: float) -> float | None:
        if total != self.total or (self.points and done < self.points[-1][1]):
            self.points.clear()
            self.total = total
        if not self.points or done != self.points[-1][1]:
            self.points.append((now, done))
        if not total or len(self.points) < 2:
            return None
        (t0, d0), (t1, d1) = self.points[0], self.points[-1]
        if d1 <= d0 or t1 <= t0:
            return None
        left = max(total - done, 0.0) / ((d1 - d0) / (t1 - t0))
        return max(left - (now - t1), 0.0)


def eta_left(store, row) -> float | None:
    """Seconds left for a running stage, from the ETA its worker wrote (None: none yet, or from an earlier attempt)."""
    if row.status != "running":
        return None
    data = store.results(row.name, ETA_KIND).get(ETA_KEY)
    if not data or data["time"] < (row.started or 0):
        return None
    return max(data["eta_s"] - (time.time() - data["time"]), 0.0)


def duration(seconds: float | None) -> str:
    """1h02m, 3m05s, 42s."""
    if seconds is None or seconds != seconds or seconds < 0:
        return ""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _num(v: float) -> str:
    return f"{v:.0f}" if abs(v - round(v)) < 1e-9 else f"{v:.1f}"


def progress_cell(status: str, done: float | None, total: float | None, eta_s: float | None) -> str:
    """`40/96  ETA 1m20s` while running; a finished stage shows N/N, never 95/96."""
    if done is None and not total:
        return ""
    if status == "succeeded" and total:
        done = total
    text = f"{_num(done or 0)}/{_num(total)}" if total else _num(done or 0)
    if status == "running" and total and eta_s is not None and (done or 0) < total:
        text += f"  ETA {duration(eta_s)}"
    return text
