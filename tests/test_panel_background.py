"""What the panel does in the background so that keys answer at once: rooms built ahead, full garbage collections
moved to pauses in typing. Driven as the user does (Pilot, the real Textual and CPython gc)."""

from __future__ import annotations

import gc

from textual.widgets import DataTable

from app.app import PREBUILT, make_app
from app.quiet_gc import FORCE_AFTER, MIN_GEN1, QuietGC
from tests.uifixtures import make_fixture_run, wait_for


def _garbage(n: int = 20_000) -> None:
    """Cyclic garbage: only the cyclic collector frees it."""
    for _ in range(n):
        a: list = []
        a.append(a)


def test_full_collections_wait_for_a_pause_in_typing(monkeypatch):
    saved = gc.get_threshold()
    q = QuietGC()
    q.install()
    try:
        assert gc.get_threshold()[2] > 10**6  # CPython starts no full collection on its own
        clock = [1000.0]
        monkeypatch.setattr("app.quiet_gc.time.monotonic", lambda: clock[0])
        q.input_seen()
        while gc.get_count()[2] < MIN_GEN1:
            _garbage()
        q.tick()  # someone is typing: no full collection
        assert q.full_collections == 0 and gc.get_count()[2] >= MIN_GEN1
        clock[0] += 5.0  # a pause
        q.tick()
        assert q.full_collections == 1 and gc.get_count()[2] == 0
        q.input_seen()
        monkeypatch.setattr("app.quiet_gc.gc.get_count", lambda: (0, 0, FORCE_AFTER))
        q.tick()  # typing without a pause for long: collected anyway, memory stays bounded
        assert q.full_collections == 2
    finally:
        q.uninstall()
    assert gc.get_threshold() == saved


async def test_rooms_are_built_while_the_first_is_read_and_open_with_their_content(runs_dir):
    run = make_fixture_run(runs_dir)
    app = make_app(run.name, runs_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: getattr(app, "prebuilt_at", None) is not None, timeout=30)
        assert set(PREBUILT) <= set(app._screen_stacks)  # built, none shown yet
        assert app.current_mode == "pipeline"
        await pilot.press("f4")
        table = app.screen.query_one("#trace-table")
        await wait_for(pilot, lambda: len(table.ids) == 12)  # read when built, shown at once
        await pilot.press("f5")
        runs = app.screen.query_one("#runs", DataTable)
        await wait_for(pilot, lambda: runs.row_count == 1)
        await pilot.press("f3")
        chart = app.screen.query_one("#chart-reward")
        await wait_for(pilot, lambda: bool(chart.lines) and chart.lines[0].steps.size == 40)
        assert app.screen.query_one("#training-title").region.height == 1


async def test_the_panel_closes_cleanly_while_rooms_are_being_built(runs_dir):
    run = make_fixture_run(runs_dir)
    for wait in (0.0, 0.55, 0.7, 0.9):  # before, during and after the first rooms' builds
        app = make_app(run.name, runs_dir)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(wait)
        assert app.return_code in (None, 0)


async def test_quitting_while_a_room_is_half_built_shows_no_error(runs_dir):
    """q pressed while a room is being mounted in the background: Textual composes nothing once it shuts down, so
    that room's on_mount (or its Header's title watcher) finds no children. The panel closes without an error."""
    import time

    run = make_fixture_run(runs_dir)
    for k in range(len(PREBUILT)):  # each room's build caught in flight
        app = make_app(run.name, runs_dir)
        async with app.run_test(size=(120, 40)) as pilot:
            deadline = time.monotonic() + 30
            while list(app._screen_stacks)[-1] != PREBUILT[k]:  # the (k+1)-th room registered, mounting
                assert time.monotonic() < deadline, "no room build caught in flight"
                await pilot.pause(0.005)
        assert app.return_code in (None, 0)
