"""The Eval and Commitment screens read the run database in thread workers; a failed read is reported, not fatal."""

from __future__ import annotations

import threading
import time

from textual.widgets import DataTable, Static

from app.app import make_app
from engine.store import RunStore, StoreError
from engine.store.telemetry import TelemetryMixin
from tests.uifixtures import MARKUP, make_fixture_run


async def _wait_for(pilot, cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause(0.05)
        if cond():
            return
    raise AssertionError("condition not met in time")


def _results(run_dir) -> None:
    with RunStore(run_dir / "run.db") as s:
        for model in ("base", "grpo"):
            for test, passed in (("RQ-01", model == "grpo"), ("think", True)):
                s.put_result("eval", "battery", f"{model}/{test}",
                             {"model": model, "test": test, "passed": passed, "detail": "d", "output": "out " + MARKUP})
        s.put_result("eval", "ratings", "grpo", {"rating": 1060, "lo": 1010, "hi": 1110, "wins": 5, "losses": 1, "ties": 0})
        s.put_result("eval", "checklist", "beats base", {"passed": True, "detail": "5-1"})
        for lam, layers, consistency in ((0, "all", 0.5), (1.0, "all", 0.9), (1.0, "last8", 0.7)):
            s.put_result("commitment", "cell", f"{lam:g}|{layers}",
                         {"lambda": lam, "layers": layers, "consistency": consistency, "perplexity": 9.0,
                          "distinct2": 0.5, "repetition": 0.1, "samples": []})


def _reads_on(monkeypatch) -> list[str]:
    """The thread of every `results` read, and a main-thread marker to compare with."""
    threads: list[str] = []
    real = TelemetryMixin.results

    def spy(self, stage, kind):
        threads.append("ui" if threading.current_thread() is threading.main_thread() else "worker")
        return real(self, stage, kind)

    monkeypatch.setattr(TelemetryMixin, "results", spy)
    return threads


async def test_eval_and_commitment_screens_read_in_workers(runs_dir, monkeypatch):
    run = make_fixture_run(runs_dir)
    _results(run)
    threads = _reads_on(monkeypatch)
    app = make_app(run.name, runs_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f6")
        grid = app.screen.query_one("#eval-grid", DataTable)
        await _wait_for(pilot, lambda: grid.row_count == 2)
        assert [str(c.label) for c in grid.ordered_columns] == ["test", "base", "grpo"]
        assert grid.get_row_at(0)[1].plain == "FAIL" and grid.get_row_at(0)[2].plain == "pass"
        await pilot.press("f7")
        sweep = app.screen.query_one("#sweep", DataTable)
        await _wait_for(pilot, lambda: sweep.row_count == 2)
        assert [str(sweep.get_row_at(i)[0]) for i in range(2)] == ["1", "baseline"]
        await pilot.press("m")  # another metric: redrawn from the cells in hand, no read
        n = len(threads)
        await _wait_for(pilot, lambda: "perplexity" in app.screen.query_one("#sweep-title", Static).render().plain)
        assert len(threads) == n
    assert threads and set(threads) == {"worker"}, threads


async def test_a_failed_read_is_reported_once_and_the_panel_stays(runs_dir, monkeypatch):
    run = make_fixture_run(runs_dir)

    def broken(self, stage, kind):
        raise StoreError("the run database is locked")

    monkeypatch.setattr(TelemetryMixin, "results", broken)
    app = make_app(run.name, runs_dir)
    seen: list[str] = []
    notify = app.notify
    app.notify = lambda message, **kw: (seen.append(str(message)), notify(message, **kw))[1]  # type: ignore[method-assign]
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f6")
        await _wait_for(pilot, lambda: any("locked" in m for m in seen))
        n = len(seen)
        await pilot.press("f7")
        await _wait_for(pilot, lambda: len(seen) > n)
        assert app.is_running and set(seen) == {"the run database is locked"}
