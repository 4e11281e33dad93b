"""The panel under load (issue 10), run by bench/ui_panel.py, each printed:

- a key press on the Traces screen over 100,000 traces to the repainted frame, while a writer commits 1,000 metric
  rows/s and the panel's poller ingests them: p99 (target <= 50 ms);
- a score edit (the `+` key) to the repainted frame with the agreement panel open and 1,000 human-edited traces
  behind it: p99 (target <= 30 ms).

A "frame" is the app handing a compositor update to its driver (`App._display`) after the trace table has rendered
a line: the moment the change would reach a terminal.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _util import ROOT, pct

from engine.dims import DIMENSIONS
from engine.store import RunStore

ROWS_PER_S = 1_000


class Size:
    """The sizes the targets are stated at; `quick()` shrinks them so the benches run in seconds (bench --quick,
    which `make test` runs to check that the benches still work; its figures are not the targets')."""

    metric_rows = 1_000_000  # a big run's metric rows; points in the big chart
    traces = 100_000  # the traces table
    edited = 1_000  # traces a person re-scored: the agreement statistics run over all of them
    live_s = 15.0  # how long a writer feeds the panel for the commit -> screen latency
    key_share = 1.0  # share of the key presses made

    def quick(self) -> None:
        self.metric_rows, self.traces, self.edited, self.live_s, self.key_share = 20_000, 2_000, 100, 2.0, 0.1

    def keys(self, n: int) -> int:
        return max(4, int(n * self.key_share))

    def rounds(self, n: int) -> int:
        """Rounds of a repeated sequence (each round many keys): at least one."""
        return max(1, round(n * self.key_share))

    @property
    def is_quick(self) -> bool:
        return self.key_share < 1.0


SIZE = Size()
EDIT_BUDGET_S = 60.0  # a blocking recompute makes each edit slow: stop sampling after this long (at least 10 edits)


class FrameClock:
    """Times from a key press to the first frame painted after the trace table re-rendered."""

    def __init__(self, app, table_cls) -> None:
        self.lines: list[float] = []
        self.frames: list[float] = []
        self._restore = (table_cls, table_cls.render_line)
        render_line = table_cls.render_line

        def timed_line(widget, y):
            self.lines.append(time.perf_counter())
            return render_line(widget, y)

        display = app._display

        def timed_display(screen, renderable):
            display(screen, renderable)
            if renderable is not None:
                self.frames.append(time.perf_counter())

        table_cls.render_line = timed_line
        app._display = timed_display

    def close(self) -> None:
        cls, render_line = self._restore
        cls.render_line = render_line

    async def press(self, pilot, key: str, timeout: float = 5.0) -> float:
        t0 = time.perf_counter()
        await pilot.press(key)  # returns once the app is idle, which can be after the timeout: look, then wait
        deadline = t0 + timeout
        while True:
            line = next((t for t in reversed(self.lines) if t > t0), None)
            if line is not None:
                frame = next((t for t in self.frames if t >= line), None)
                if frame is not None:
                    return frame - t0
            if time.perf_counter() >= deadline:
                return timeout
            await asyncio.sleep(0.0005)


def add_human_edits(run: Path, n: int | None = None) -> None:
    """Human scores on `n` traces across every dimension, as if reviewed: the agreement statistics read them all."""
    n = SIZE.edited if n is None else n
    rng = np.random.default_rng(1)
    with RunStore(run / "run.db") as s, s._tx() as c:
        sets = ", ".join(f"h_{d} = ?" for d in DIMENSIONS)
        vals = rng.random((n, len(DIMENSIONS))).round(2)
        c.executemany(f"UPDATE traces SET {sets}, reviewed = 1 WHERE id = ?",
                      ((*vals[i].tolist(), i + 1) for i in range(n)))
        c.executemany("INSERT INTO score_edits (trace_id, dim, old, new, time) VALUES (?, ?, ?, ?, ?)",
                      ((i + 1, d, 0.5, float(vals[i][j]), time.time()) for i in range(n) for j, d in enumerate(DIMENSIONS)))


WRITER = r"""
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from engine.dims import DIMENSIONS
from engine.store import RunStore
db, stop = Path(sys.argv[1]), Path(sys.argv[2])
keys = ["loss", "reward", "kl"] + [f"rewards/{d}/mean" for d in DIMENSIONS]
written, step, t0 = 0, 0, time.perf_counter()
with RunStore(db) as s:
    while not stop.exists():
        now = time.time()
        s.add_metric_rows([("grpo", step + i // len(keys), keys[i % len(keys)], 0.5, now) for i in range(50)])
        written, step = written + 50, step + 50 // len(keys) + 1
        time.sleep(max(0.0, t0 + written / 1000 - time.perf_counter()))  # on schedule: a late commit is caught up
print(written, time.perf_counter() - t0)
"""


def start_writer(run: Path) -> tuple[subprocess.Popen, Path]:
    """1,000 metric rows/s in 20 commits of 50 rows, from another process, as a GRPO stage logging many keys would."""
    stop = run / "bench-writer.stop"
    stop.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(run / "run.db"), str(stop), str(ROOT)],
                            stdout=subprocess.PIPE, text=True)
    return proc, stop


def stop_writer(proc: subprocess.Popen, stop: Path) -> float:
    """Rows per second the writer reached."""
    stop.touch()
    out, _ = proc.communicate(timeout=60)
    written, secs = out.split()
    return int(written) / float(secs)


async def traces_under_load(root: Path, run: Path) -> None:
    from app.app import make_app
    from app.widgets.trace_table import TraceTable

    add_human_edits(run)
    app = make_app(run.name, root)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f4")
        while not app.screen.query("#trace-count"):  # composed (on a busy machine that can take a while)
            await pilot.pause(0.05)
        count = app.screen.query_one("#trace-count")
        for _ in range(600):  # the table and its count are filled (by a worker, once the reads move off the loop)
            await pilot.pause(0.05)
            if f"{SIZE.traces} of {SIZE.traces}" in str(count.render()):
                break
        agreement = app.screen.query_one("#agreement")
        if not agreement.display:
            await pilot.press("a")  # the agreement pane opens on `a` where it starts closed
            await pilot.pause(0.5)
        clock = FrameClock(app, TraceTable)
        writer, stop = start_writer(run)
        await pilot.pause(1.0)
        ingested0 = app.model.version
        keys: list[float] = []
        rng = np.random.default_rng(2)
        t_start = time.perf_counter()
        for i in range(SIZE.keys(200)):
            keys.append(await clock.press(pilot, "down" if i % 10 else "pagedown"))
            await asyncio.sleep(float(rng.uniform(0.005, 0.03)))  # a person's pace, so polls land between keys
        elapsed = time.perf_counter() - t_start
        polls = app.model.version - ingested0
        edits: list[float] = []
        t_edits = time.perf_counter()
        screen = app.screen
        t = screen._current()
        value = (t["effective"] or {}).get(DIMENSIONS[screen.dim_index]) if t else None
        first = "minus" if value is not None and value >= 0.95 else "plus"  # a `+` at 1.00 changes nothing, draws nothing
        other = "minus" if first == "plus" else "plus"
        for i in range(SIZE.keys(100)):
            edits.append(await clock.press(pilot, first if i % 2 == 0 else other, timeout=30.0))
            await asyncio.sleep(float(rng.uniform(0.005, 0.03)))
            if i >= 9 and time.perf_counter() - t_edits > EDIT_BUDGET_S:
                break
        await pilot.pause(0.5)
        rate = stop_writer(writer, stop)
        clock.close()
        shown = bool(agreement.display and agreement.size.height)
    print(f"ui_panel: traces screen, {SIZE.traces:,} traces, key press -> repainted frame while another process commits "
          f"{rate:,.0f} metric rows/s and the poller ingests them ({polls} polls applied during {len(keys)} keys "
          f"in {elapsed:.1f} s): median "
          f"{pct(keys, 50) * 1000:.1f} ms, p99 {pct(keys, 99) * 1000:.1f} ms, max {max(keys) * 1000:.1f} ms "
          f"(target p99 <= 50 ms)")
    print(f"ui_panel: score edit (+/-) -> repainted frame with the agreement panel open over {SIZE.edited:,} human-edited "
          f"traces, {len(edits)} edits: median {pct(edits, 50) * 1000:.1f} ms, p99 {pct(edits, 99) * 1000:.1f} ms, "
          f"max {max(edits) * 1000:.1f} ms (target p99 <= 30 ms); agreement panel shown: {shown}")
