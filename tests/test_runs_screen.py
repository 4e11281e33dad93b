"""The runs screen: summary columns, sorting, and marked runs compared (config diff, deltas, overlaid metric)."""

from __future__ import annotations

import pytest
from rich.console import Console
from textual.widgets import DataTable, Select

from app.app import make_app
from app.widgets.chart import LineChart
from engine import config
from engine.config import STAGES
from engine.config.overrides import with_overrides
from engine.dims import DIMENSIONS, equal_weights
from engine.store import RunStore
from tests.conftest import DEMO
from tests.uifixtures import T0, make_fixture_run, wait_for

A, B, C = "20260211-101500-snap", "20260212-090000-lr5e5", "20260213-080000-copy"
HELDOUT = ["Should I rent or buy?", "Which laptop should I get?", "Is it worth learning Rust now?"]


def make_three_runs(root):
    """A: the fixture run. B: the same config but grpo.learning_rate 5e-5, a better reward, an eval with a checklist.
    C: data taken from A, named by hand, SFT only."""
    make_fixture_run(root, A)
    b = make_fixture_run(root, B, with_metrics=False)
    for run_id, better in ((A, False), (B, True)):  # both ran eval: their final models can meet head to head
        with RunStore(root / run_id / "run.db") as s:
            for k, prompt in enumerate(HELDOUT):
                out = (f"<think>\nThe parameters are cost and time; I do not know your budget.\n</think>\n\nIt depends on "
                       f"cost and time: weigh both, for example {prompt.lower()}" if better else "<think>\nok\n</think>\n\nYes.")
                s.put_result("eval", "heldout", f"grpo/{k}", {"model": "grpo", "prompt": prompt, "output": out,
                                                              "scores": {d: 0.6 if better else 0.4 for d in DIMENSIONS}})
    config.save(with_overrides(DEMO, ["grpo.learning_rate=5e-5"]), b / "config.toml")
    with RunStore(b / "run.db") as s:
        s._conn.execute("UPDATE run SET name = 'demo grpo.learning_rate=5e-05', created = ?", (T0 + 86400,))
        rows = []
        for step in range(1, 41):
            rows.append(("grpo", step, "reward", 0.35 + step * 0.006, T0))
            rows.append(("grpo", step, "loss", 0.8 / step, T0))
            for j, d in enumerate(DIMENSIONS):
                rows.append(("grpo", step, f"rewards/{d}/mean", 0.12 * (j % 5) + step * 0.003, T0))
        for step in range(1, 6):
            rows.append(("sft", step, "loss", 2.0 - step * 0.1, T0))
        s.add_metric_rows(rows)
        s.put_result("eval", "ratings", "grpo", {"rating": 1012.0, "lo": 990.0, "hi": 1031.0, "wins": 5, "losses": 3, "ties": 1})
        for i, item in enumerate(["a", "b", "c", "d", "e"]):
            s.put_result("eval", "checklist", item, {"passed": i < 3, "detail": ""})
    c = root / C
    c.mkdir()
    config.save(config.load(DEMO), c / "config.toml")
    with RunStore(root / A / "run.db") as src:
        snapshot = src.data_snapshot()
    with RunStore(c / "run.db", create=True) as s:
        s.init_run(C, "reuse A, new weights", str(DEMO), STAGES, ["sft"])
        s._conn.execute("UPDATE run SET created = ?", (T0 + 2 * 86400,))
        s._conn.execute("UPDATE stages SET status = 'succeeded', attempts = 1, started = ?, ended = ? WHERE name = 'sft'",
                        (T0, T0 + 65))
        s.copy_data(snapshot, {"kind": "run", "source_id": A, "source_name": "demo", "source_path": str(root / A)},
                    equal_weights())
        s.add_metric_rows([("sft", step, "loss", 2.2 - step * 0.05, T0) for step in range(1, 11)])


def _table_ids(app) -> list[str]:
    table = app.screen.query_one("#runs", DataTable)
    return [table.coordinate_to_cell_key((i, 0)).row_key.value for i in range(table.row_count)]


async def test_runs_table_summaries_sort_and_compare(runs_dir):
    make_three_runs(runs_dir)
    app = make_app(None, runs_dir)
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.press("f5")
        await wait_for(pilot, lambda: len(_table_ids(app)) == 3)
        assert _table_ids(app) == [C, B, A]  # newest first
        table = app.screen.query_one("#runs", DataTable)
        row_b = table.get_row_at(1)
        # The default name is cut in the middle (both ends kept), the metric columns come before the wordy ones.
        assert str(row_b[2]) == " demo grp…e=5e-05" and str(row_b[-3]) == " 3/5" and str(row_b[-4]).startswith(" 1012±")
        assert str(table.get_row_at(0)[-1]) == f" run {A}"
        for _ in range(5):  # sort by the GRPO reward column: B (the better reward) first, C (no GRPO) last
            await pilot.press("o")
        await wait_for(pilot, lambda: _table_ids(app) == [B, A, C])
        await pilot.press("space", "down", "space")
        chart = app.screen.query_one("#compare-chart", LineChart)
        await wait_for(pilot, lambda: app.screen.compare_view is not None and len(chart.lines) == 2)
        console = Console(width=150, record=True)
        console.print(app.screen.compare_view)
        diff = console.export_text()
        assert "grpo.learning_rate" in diff and "0.01" in diff and "5e-05" in diff
        select = app.screen.query_one("#compare-key", Select)
        assert select.value == "grpo/reward"
        assert app.screen.offered_keys == sorted({"grpo/reward", "grpo/loss", "grpo/kl", "sft/loss",
                                                  *[f"grpo/rewards/{d}/mean" for d in DIMENSIONS]})
        assert [line.label for line in chart.lines] == [B, A]
        select.value = "sft/loss"  # a key only one of them has: one line, no "waiting for data"
        await wait_for(pilot, lambda: app.screen.metric_key == "sft/loss" and len(chart.lines) == 2
                       and len(chart.lines[1].steps) == 0)
        assert [line.label for line in chart.lines] == [B, A]


@pytest.mark.parametrize("marked", [True])
def test_snapshot_runs_screen_three_runs(snap_compare, runs_dir, marked):
    make_three_runs(runs_dir)
    app = make_app(None, runs_dir)

    async def before(pilot):
        await pilot.press("f5")
        await wait_for(pilot, lambda: len(_table_ids(app)) == 3)
        await pilot.press("down", "space", "down", "space")
        chart = app.screen.query_one("#compare-chart", LineChart)
        await wait_for(pilot, lambda: len(chart.lines) == 2 and app.screen.compare_view is not None)

    assert snap_compare(app, terminal_size=(150, 48), run_before=before)


async def test_new_run_dialog_takes_data_from_a_run_and_a_name(tmp_path, runs_dir, busy_env, monkeypatch):
    from textual.widgets import Input

    from engine.runner import supervisor as sup
    from tests.conftest import write_config

    monkeypatch.setenv("BUSY_STEPS", "5")
    make_fixture_run(runs_dir, A)
    cfg = write_config(tmp_path, '[run]\nstages = ["smoke"]\n')
    app = make_app(None, runs_dir, cfg)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("n")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "NewRunScreen")
        dialog = app.screen
        select = dialog.query_one("#newrun-data", Select)
        await wait_for(pilot, lambda: any(value == A for _, value in select._options))  # offered once read
        select.value = A  # offered: runs that have traces
        dialog.query_one("#newrun-name", Input).value = "weights v2"
        dialog.query_one("#newrun-name", Input).focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.model.run_dir is not None)  # the panel opens the new run once created
    new = [d for d in sup.list_run_dirs(runs_dir) if d.name != A]
    assert len(new) == 1 and app.model.run_dir == new[0]
    sup.wait(new[0], timeout_s=60)
    with RunStore(new[0] / "run.db", readonly=True) as s:
        assert s.run_info()["name"] == "weights v2" and s.lineage()["source_id"] == A and s.trace_count() == 12
