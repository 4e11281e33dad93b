"""The control panel driven as a person would: Pilot for behaviour, snapshots for layout."""

from __future__ import annotations


import pytest
from textual.widgets import DataTable, Static

from app.app import make_app
from app.widgets.chart import LineChart
from app.widgets.trace_table import TraceTable
from engine.dims import DIMENSIONS
from engine.store import RunStore
from tests.conftest import ROOT, demo_variant, write_config
from tests.uifixtures import MARKUP, make_fixture_run
from tests.uifixtures import text_of as _text, wait_for as _wait_for




async def test_pipeline_shows_stages_and_reasons(runs_dir):
    run = make_fixture_run(runs_dir)
    app = make_app(run.name, runs_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await _wait_for(pilot, lambda: app.model.stages)
        table = app.screen.query_one("#stages", DataTable)
        await _wait_for(pilot, lambda: table.row_count == 4)
        rows = [table.get_row_at(i) for i in range(table.row_count)]
        assert [r[0] for r in rows] == ["datagen", "judge", "sft", "grpo"]
        assert rows[2][1].plain == "failed" and "example failure" in rows[2][6].plain


async def test_start_a_stage_and_see_status_change(tmp_path, runs_dir, busy_env, monkeypatch):
    monkeypatch.setenv("BUSY_STEPS", "20")
    from engine.runner import supervisor as sup

    run_dir = sup.create_run(write_config(tmp_path, '[run]\nstages = ["smoke"]\n'), runs_dir)
    app = make_app(run_dir.name, runs_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.screen.query_one("#stages", DataTable)
        await _wait_for(pilot, lambda: table.row_count == 1)
        assert table.get_row_at(0)[1].plain == "pending"
        await pilot.press("s", "enter")  # the stage picker opens on the selected row
        await _wait_for(pilot, lambda: table.get_row_at(0)[1].plain == "succeeded", timeout=60)
        assert app.model.get("smoke", "m1") is not None and app.model.get("smoke", "m1").n == 20


async def test_edit_score_is_committed_and_undone(runs_dir):
    run = make_fixture_run(runs_dir)
    app = make_app(run.name, runs_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f4")
        table = app.screen.query_one(TraceTable)
        await _wait_for(pilot, lambda: len(table.ids) == 12)
        tid = table.current_id
        await _wait_for(pilot, lambda: app.screen.view is not None and app.screen.view.trace["id"] == tid)
        await pilot.press("right_square_bracket", "right_square_bracket")  # third dimension
        await pilot.press("minus")
        dim = DIMENSIONS[2]

        def n_edits(n: int):
            def check() -> bool:
                with RunStore(run / "run.db") as store:
                    return len(store.score_edits(tid)) == n
            return check

        await _wait_for(pilot, n_edits(1))  # the writer thread commits it
        with RunStore(run / "run.db") as store:
            edits = store.score_edits(tid)
            assert [(e["dim"], e["undone"]) for e in edits] == [(dim, 0)]
            t = store.trace(tid)
            assert t["human"][dim] == pytest.approx(max(0.0, t["judge"][dim] - 0.1))
            assert t["judge"][dim] != t["human"][dim] or t["judge"][dim] == 0.0
        await pilot.press("enter")
        await pilot.press(*"0.35", "enter")  # the old value is selected: typing replaces it
        await _wait_for(pilot, n_edits(2))
        await pilot.press("u")
        await _wait_for(pilot, lambda: any("undid" in n.message for n in app._notifications))
        with RunStore(run / "run.db") as store:
            assert len(store.score_edits(tid)) == 2
            assert store.trace(tid)["human"][dim] == pytest.approx(max(0.0, store.trace(tid)["judge"][dim] - 0.1))
        await pilot.press("v")

        def reviewed() -> bool:
            with RunStore(run / "run.db") as store:
                return store.trace(tid)["reviewed"]

        await _wait_for(pilot, reviewed)


async def test_filter_and_sort(runs_dir):
    run = make_fixture_run(runs_dir)
    app = make_app(run.name, runs_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f4")
        screen = app.screen
        table = screen.query_one(TraceTable)
        await _wait_for(pilot, lambda: len(table.ids) == 12)
        await pilot.press("slash")
        app.screen.query_one("#f-tier").value = "rejected"
        await pilot.press("enter")
        await _wait_for(pilot, lambda: len(table.ids) == 4)
        with RunStore(run / "run.db") as store:
            assert all(store.trace(i)["tier"] == "rejected" for i in table.ids)
        await pilot.press("slash", "ctrl+r")
        await _wait_for(pilot, lambda: len(table.ids) == 12)
        by_id = list(table.ids)
        await pilot.press("o", "down", "down", "down", "enter")  # id, category, tier, weighted: best first
        await _wait_for(pilot, lambda: screen.sort == "weighted" and table.ids != by_id)  # the sorted ids are in
        with RunStore(run / "run.db") as store:
            scores = [store.trace(i)["weighted"] for i in table.ids]
        assert scores == sorted(scores, reverse=True)
        best_first = list(table.ids)
        await pilot.press("O")
        await _wait_for(pilot, lambda: not screen.descending and table.ids != best_first)
        with RunStore(run / "run.db") as store:
            assert [store.trace(i)["weighted"] for i in table.ids] == sorted(scores)


async def test_markup_in_traces_and_logs_shows_literally(runs_dir):
    run = make_fixture_run(runs_dir)
    app = make_app(run.name, runs_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await _wait_for(pilot, lambda: app.model.stages)
        await pilot.press("f4")
        table = app.screen.query_one(TraceTable)
        await _wait_for(pilot, lambda: len(table.ids) == 12)
        await _wait_for(pilot, lambda: bool(app.screen.query(".trace-chunk")))
        body = "".join(_text(w) for w in app.screen.query(".trace-chunk"))
        assert MARKUP in body and "reasoning 0 " + MARKUP in body
        await pilot.press("f2")
        log = app.screen.query_one("#pipeline-log")
        await _wait_for(pilot, lambda: any(MARKUP in "".join(seg.text for seg in line) for line in log.lines))


async def test_help_and_palette(runs_dir):
    app = make_app(None, runs_dir, ROOT / "data" / "configs" / "demo.toml")
    async with app.run_test(size=(80, 24)) as pilot:
        assert "Press n to start a new run" in _text(app.screen.query_one("#run-title", Static))
        await pilot.press("question_mark")
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape")
        assert type(app.screen).__name__ == "PipelineScreen"


async def test_bad_config_edit_is_refused_and_nothing_saved(runs_dir):
    run = make_fixture_run(runs_dir)
    before = (run / "config.toml").read_text()
    app = make_app(run.name, runs_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("e")
        from textual.widgets import TextArea

        area = app.screen.query_one(TextArea)
        area.text = area.text.replace("learning_rate = 0.002", "learning_rate = -1.0")
        await pilot.press("ctrl+s")
        err = _text(app.screen.query_one("#config-error", Static))
        assert "sft.learning_rate" in err and "greater than 0" in err
    assert (run / "config.toml").read_text() == before


async def test_real_grpo_stage_metrics_reach_training_screen(tmp_path, runs_dir):
    from engine.runner import supervisor as sup

    cfg = demo_variant(tmp_path, grpo__max_steps=3, grpo__sample_every=1, run__stages=["grpo"])
    run_dir = sup.create_run(cfg, runs_dir)
    app = make_app(run_dir.name, runs_dir)
    async with app.run_test(size=(160, 50)) as pilot:
        table = app.screen.query_one("#stages", DataTable)
        await _wait_for(pilot, lambda: table.row_count == 1)
        await pilot.press("s", "enter")
        await pilot.press("f3")
        chart = app.screen.query_one("#chart-reward", LineChart)
        def done() -> bool:
            row = app.model.stage("grpo")
            return row is not None and row.status in ("succeeded", "failed", "crashed")

        await _wait_for(pilot, done, timeout=240)
        assert app.model.stage("grpo").status == "succeeded", app.model.stage("grpo").reason
        await _wait_for(pilot, lambda: app.model.get("grpo", "reward") is not None and app.model.get("grpo", "reward").n >= 3)
        await _wait_for(pilot, lambda: len(chart.lines) == 10)  # the chart redraws on the next poll
        labels = [ln.label for ln in chart.lines]
        assert "reward" in labels and "ENT" in labels and len(labels) == 10
        assert all(app.model.get("grpo", f"rewards/{d}/mean") is not None for d in DIMENSIONS)


@pytest.mark.parametrize("room", ["pipeline"])
def test_snapshot(snap_compare, runs_dir, room):
    """The pipeline at 120x40 on a fixture run with fixed ids and times (traces and training: test_training_view)."""
    make_fixture_run(runs_dir)
    app = make_app("20260211-101500-snap", runs_dir)
    key = {"pipeline": "f2", "training": "f3", "traces": "f4"}[room]

    async def before(pilot):
        await _wait_for(pilot, lambda: bool(app.model.stages) and len(app.model.logs) > 0)
        await pilot.press(key)
        table = app.screen.query_one("#stages", DataTable)
        await _wait_for(pilot, lambda: table.row_count == 4)
        await pilot.pause()

    assert snap_compare(app, terminal_size=(120, 40), run_before=before)
