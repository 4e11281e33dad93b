"""Nothing silent: a failed read in any panel worker reaches the user as a notification, through the app's one
handler; the trace table's row cache stays bounded; the poll thread waits for a panel that falls behind."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from textual.app import App

from app.app import make_app
from app.failures import ReportsFailures
from app.widgets import trace_table
from app.widgets.trace_table import TraceTable
from engine.store import RunStore
from tests.uifixtures import make_fixture_run, wait_for

APP = Path(__file__).resolve().parent.parent / "app"


def _classes_with_workers() -> list[type]:
    """Every class under app/ with a method decorated by textual's @work."""
    found = []
    for path in APP.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            for fn in node.body:
                decos = [d.func if isinstance(d, ast.Call) else d for d in getattr(fn, "decorator_list", [])]
                if any(isinstance(d, ast.Name) and d.id == "work" for d in decos):
                    mod = ".".join(path.relative_to(APP.parent).with_suffix("").parts)
                    found.append(getattr(importlib.import_module(mod), node.name))
                    break
    return found


def _reports(cls: type) -> bool:
    if issubclass(cls, (ReportsFailures, App)):
        return True
    users = cls.__subclasses__()  # a mixin (AgreementPane, RunControl): every class that mixes it in must report
    return bool(users) and all(_reports(u) for u in users)


def test_every_node_with_a_worker_hands_its_failures_to_the_app():
    classes = _classes_with_workers()
    assert len(classes) >= 11  # the screens, the trace table, the agreement pane, the app and its run control
    assert [c.__name__ for c in classes if not _reports(c)] == []


def _messages(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def test_a_failed_trace_read_and_a_failed_runs_read_are_notified(runs_dir, monkeypatch):
    run = make_fixture_run(runs_dir)

    def broken(self, ids):
        raise OSError("disk I/O error")

    monkeypatch.setattr(RunStore, "trace_summaries", broken)
    app = make_app(run.name, runs_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f4")
        await wait_for(pilot, lambda: any("disk I/O error" in m for m in _messages(app)), timeout=15)
        assert any(m.startswith("read failed: OSError") for m in _messages(app))

        def no_runs(root):
            raise PermissionError("runs folder unreadable")

        monkeypatch.setattr("app.screens.runs.load_summaries", no_runs)
        await pilot.press("f5")
        await wait_for(pilot, lambda: any("runs folder unreadable" in m for m in _messages(app)), timeout=15)


async def test_a_failed_host_sample_is_notified(runs_dir, monkeypatch):
    run = make_fixture_run(runs_dir)

    def broken(pid):
        raise RuntimeError("psutil gave up")

    monkeypatch.setattr("app.screens.training.sample_host", broken)
    app = make_app(run.name, runs_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f3")
        await wait_for(pilot, lambda: any("psutil gave up" in m for m in _messages(app)), timeout=15)


async def test_trace_rows_cache_stays_bounded(runs_dir, monkeypatch):
    monkeypatch.setattr(trace_table, "PAGE", 10)
    monkeypatch.setattr(trace_table, "MAX_ROWS", 20)  # below the floor: two read-ahead windows (2 x (10 + 20))
    run = make_fixture_run(runs_dir, traces=200)
    app = make_app(run.name, runs_dir)
    async with app.run_test(size=(120, 24)) as pilot:
        await pilot.press("f4")
        table = app.screen.query_one(TraceTable)
        await wait_for(pilot, lambda: len(table.ids) == 200 and table.ids[0] in table._rows)
        for _ in range(8):
            await pilot.press("pagedown")
            await pilot.pause(0.1)
        await wait_for(pilot, lambda: table.current_id in table._rows)
        assert table.cursor == 160 and len(table._rows) <= 60
        assert table.current_id in table._rows  # what is on screen is kept
        await pilot.press("home")  # evicted rows are read again
        await wait_for(pilot, lambda: table.ids[0] in table._rows)


async def test_poll_thread_waits_for_a_panel_that_falls_behind(runs_dir):
    run = make_fixture_run(runs_dir)
    app = make_app(run.name, runs_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.model.version > 0)
        for _ in range(5):  # as if a delta were still queued (a delta read at this moment may set it again: retry)
            app._delta_consumed.clear()
            waits = app.poll_waits
            await wait_for(pilot, lambda: app.poll_waits >= waits + 2 or app._delta_consumed.is_set(), timeout=10)
            if not app._delta_consumed.is_set():
                break
        version, waits = app.model.version, app.poll_waits
        await pilot.pause(0.6)
        assert app.model.version == version and app.poll_waits > waits  # waiting, not posting
        app._delta_consumed.set()
        await wait_for(pilot, lambda: app.model.version > version)
