"""Readable at 120x40, usable at 80x24: every room's layout pinned by a snapshot at both sizes, and at 80x24 every
room keeps q and ? in its footer and every health rule keeps its chip on screen."""

from __future__ import annotations

import pytest
from textual.widgets import Footer

from app.app import make_app
from app.widgets.health_strip import RuleChip
from tests.uifixtures import make_fixture_run, wait_for

FIXED_HOST = {"sys_used_mb": 6144.0, "sys_total_mb": 24576.0, "sys_cpu": 37.0, "cores": 2}
ROOMS = {"pipeline": "f2", "runs": "f5", "eval": "f6", "commitment": "f7", "help": "question_mark"}
SIZES = [(120, 40), (80, 24)]


def _app(runs_dir, monkeypatch):
    monkeypatch.setattr("app.screens.training.sample_host", lambda pid: dict(FIXED_HOST))
    make_fixture_run(runs_dir)
    make_fixture_run(runs_dir, run_id="20260212-093000-a-second-run-with-a-long-name")
    return make_app("20260211-101500-snap", runs_dir)


@pytest.mark.parametrize("room", list(ROOMS))
@pytest.mark.parametrize("size", SIZES, ids=["120x40", "80x24"])
def test_room_snapshot(snap_compare, runs_dir, monkeypatch, room, size):
    """Pipeline, Runs, Eval, Commitment and Help (Training and Traces: tests/test_training_view.py)."""
    app = _app(runs_dir, monkeypatch)

    async def before(pilot):
        await pilot.pause(0.8)
        await pilot.press(ROOMS[room])
        await pilot.pause(1.5)  # the room's reads have landed

    assert snap_compare(app, terminal_size=size, run_before=before)


def _footer_keys(app) -> list[str]:
    """The keys the footer shows, those that fit on the screen."""
    footer = app.screen.query_one(Footer)
    width = app.screen.size.width
    return [k.key_display or k.key for k in footer.query("FooterKey") if k.region.right <= width and k.region.width]


async def test_every_room_keeps_q_and_help_and_its_main_content_at_80x24(runs_dir, monkeypatch):
    app = _app(runs_dir, monkeypatch)
    async with app.run_test(size=(80, 24)) as pilot:
        for key in ("f2", "f3", "f4", "f5", "f6", "f7"):
            await pilot.press(key)
            await wait_for(pilot, lambda: {"q", "?"} <= set(_footer_keys(app)), timeout=10)
        await pilot.press("f3")
        await pilot.pause(0.5)
        chart = app.screen.query_one("#chart-reward")
        assert chart.region.width >= 70 and chart.region.height >= 8  # the reward chart, at full width
        title = app.screen.query_one("#training-title")
        assert title.region.height == 1  # the header on one line
        await pilot.press("f4")
        table = app.screen.query_one("#trace-table")
        await wait_for(pilot, lambda: table.ids)
        assert table.region.width >= 72  # every column of the trace table: 71 cells
        assert "INS" in table.render_line(0).text


@pytest.mark.parametrize("size", SIZES, ids=["120x40", "80x24"])
async def test_every_health_rule_has_a_chip_on_screen(runs_dir, monkeypatch, size):
    app = _app(runs_dir, monkeypatch)
    async with app.run_test(size=size) as pilot:
        await pilot.press("f3")
        await pilot.pause(1.0)
        chips = list(app.screen.query(RuleChip))
        assert len(chips) == 13
        width = app.screen.size.width
        for chip in chips:
            assert chip.region.width >= 8 and chip.region.right <= width, (chip.rule, chip.region)
