"""Trace edits under faults, driven through Pilot: shown as saved only once committed, refused on a read-only run,
said in one line on a full disk, landing on the trace the key was typed on, and seen by other panels."""

from __future__ import annotations

from collections import Counter

import pytest
from textual.widgets import DataTable

from app.app import make_app
from app.widgets.trace_table import TraceTable
from engine.dims import DIMENSIONS
from engine.store import RunStore
from tests.diskfixtures import fill, read_only, small_disk
from tests.uifixtures import make_fixture_run, text_of, wait_for

DIM = DIMENSIONS[0]


def _edits(run) -> list[dict]:
    with RunStore(run / "run.db", readonly=True) as s:
        return s.score_edits()


def _messages(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def _open_traces(pilot, app, n: int):
    await pilot.press("f4")
    await wait_for(pilot, lambda: bool(app.screen.query(TraceTable)))
    table = app.screen.query_one(TraceTable)
    await wait_for(pilot, lambda: len(table.ids) == n)
    await wait_for(pilot, lambda: app.screen.view is not None and app.screen.view.trace["id"] == table.current_id)
    return table


async def test_read_only_run_refuses_edits_and_shows_everything_else(tmp_path):
    with small_disk(tmp_path) as disk:
        run = make_fixture_run(disk / "runs")
        assert not (run / "run.db-wal").exists()  # the last writer closed: no -wal/-shm left, as the issue met it
        with RunStore(run / "run.db", readonly=True) as s:
            judge = s.trace(1)["judge"][DIM]
        with read_only(disk):
            app = make_app(run.name, disk / "runs")
            async with app.run_test(size=(120, 40)) as pilot:
                stages = app.screen.query_one("#stages", DataTable)
                await wait_for(pilot, lambda: stages.row_count == 4)
                assert [stages.get_row_at(i)[1].plain for i in range(4)] == ["succeeded", "succeeded", "failed",
                                                                              "pending"]
                table = await _open_traces(pilot, app, 12)
                save = app.screen.query_one("#trace-save")
                await wait_for(pilot, lambda: "read-only" in text_of(save))
                app.clear_notifications()
                await pilot.press("plus", "plus")  # each refused with the reason (toasts expire: at least one left)
                await wait_for(pilot, lambda: any("read-only" in m and "edits are off" in m for m in _messages(app)))
                assert app.screen.view.trace["human"].get(DIM) is None  # the shown value never moved
                assert "edits are off" in text_of(save) and table.current_id == 1
        assert _edits(run) == []
        with RunStore(run / "run.db", readonly=True) as s:
            assert s.trace(1)["judge"][DIM] == judge and s.trace(1)["human"].get(DIM) is None


async def test_full_disk_edit_says_why_and_is_not_shown(tmp_path):
    with small_disk(tmp_path, "8m") as disk:
        run = make_fixture_run(disk / "runs")
        app = make_app(run.name, disk / "runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await _open_traces(pilot, app, 12)
            await pilot.pause(0.5)
            filler = fill(disk)
            await pilot.press("plus")
            await wait_for(pilot, lambda: any("not saved" in m and "full" in m for m in _messages(app)), timeout=20)
            line = next(m for m in _messages(app) if "not saved" in m)
            assert "\n" not in line and str(disk) in line  # one line that names the disk
            await wait_for(pilot, lambda: not app.screen._pending)
            assert app.screen.view.trace["human"].get(DIM) is None
            assert _edits(run) == []
            filler.unlink()  # room again: the next edit is saved and then shown
            await pilot.press("plus")
            await wait_for(pilot, lambda: len(_edits(run)) == 1, timeout=20)
            await wait_for(pilot, lambda: app.screen.view.trace["human"].get(DIM) is not None)
            assert app.screen.view.trace["human"][DIM] == pytest.approx(_edits(run)[0]["new"])


@pytest.mark.parametrize("sort", ["id", "weighted"])
async def test_fast_nudges_land_on_the_trace_they_were_typed_on(runs_dir, sort):
    run = make_fixture_run(runs_dir, traces=48)
    with RunStore(run / "run.db", readonly=True) as s:
        before = {t["id"]: t["judge"][DIM] for t in s.traces()}
    app = make_app(run.name, runs_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        table = await _open_traces(pilot, app, 48)
        if sort != "id":
            app.screen.sort, app.screen.descending = sort, True
            app.screen.reload()
            await wait_for(pilot, lambda: table.sort == sort)
            await pilot.pause(0.3)
        typed_on = []
        for _ in range(40):
            typed_on.append(table.current_id)
            await pilot.press("plus")
            await pilot.pause(0.05)
            await pilot.press("down")
            await pilot.pause(0.05)
        await wait_for(pilot, lambda: not app.screen._pending, timeout=30)
        shown = app.screen.view.trace
    presses = Counter(typed_on)
    edits = _edits(run)
    with RunStore(run / "run.db", readonly=True) as s:
        human = {t["id"]: t["human"].get(DIM) for t in s.traces()}
    for tid, value in before.items():  # each `+` landed on the trace it was typed on, once; none at 1.00 recorded
        k = presses.get(tid, 0)
        changed = [e for e in edits if e["trace_id"] == tid]
        steps = min(k, max(0, round((1.0 - value) / 0.1 + 0.4999))) if k else 0
        assert len(changed) == steps, (tid, value, k, changed)
        if steps:
            assert human[tid] == pytest.approx(min(1.0, value + 0.1 * k), abs=1e-6)
    assert shown["human"].get(DIM) == human[shown["id"]]  # what the pane shows is what is stored
    if sort == "id":
        assert typed_on == list(range(1, 41))  # the cursor never jumped back to an edited row


async def test_plus_at_the_top_records_nothing(runs_dir):
    run = make_fixture_run(runs_dir)
    with RunStore(run / "run.db") as s:
        s.edit_score(1, DIM, 1.0)
    app = make_app(run.name, runs_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await _open_traces(pilot, app, 12)
        await pilot.press("plus", "plus")
        await wait_for(pilot, lambda: not app.screen._pending)
    assert len(_edits(run)) == 1  # only the one made above


async def test_a_panel_sees_another_panels_edit_within_a_poll(runs_dir):
    run = make_fixture_run(runs_dir)
    first, second = make_app(run.name, runs_dir), make_app(run.name, runs_dir)
    async with first.run_test(size=(120, 40)) as p1, second.run_test(size=(120, 40)) as p2:
        t1 = await _open_traces(p1, first, 12)
        await _open_traces(p2, second, 12)
        await p2.press("plus")
        await wait_for(p2, lambda: len(_edits(run)) == 1)
        new = _edits(run)[0]["new"]
        # The first panel shows it in its trace pane and its table row, without a key pressed.
        await wait_for(p1, lambda: first.screen.view.trace["human"].get(DIM) == pytest.approx(new), timeout=5)
        await wait_for(p1, lambda: f"{new:.2f}"[1:] in (t1._rows.get(1) or "").split()[4], timeout=5)
        with RunStore(run / "run.db") as s:  # and another process's edit the same way
            s.edit_score(1, DIM, 0.05)
        await wait_for(p1, lambda: first.screen.view.trace["human"].get(DIM) == pytest.approx(0.05), timeout=5)
        await wait_for(p1, lambda: ".05" in (t1._rows.get(1) or "").split()[4], timeout=5)
