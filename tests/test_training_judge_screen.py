"""The Training screen charts GRPO's judge per step and shows how many judge calls failed."""

from __future__ import annotations

from app.app import make_app
from app.widgets.chart import LineChart
from engine.store import RunStore
from tests.test_app import _wait_for
from tests.uifixtures import T0, make_fixture_run


async def test_judge_failures_are_on_the_training_screen(runs_dir):
    run = make_fixture_run(runs_dir)
    rows = []
    for step in range(1, 11):
        fails = 2 if step % 3 == 0 else 0  # 6 failures in 80 calls
        rows += [("grpo", step, "judge/calls", 8, T0), ("grpo", step, "judge/cache_hits", 0, T0),
                 ("grpo", step, "judge/failures", fails, T0), ("grpo", step, "judge/unscored", fails, T0)]
    with RunStore(run / "run.db") as s:
        s.add_metric_rows(rows)
    app = make_app(run.name, runs_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await _wait_for(pilot, lambda: app.model.get("grpo", "judge/calls") is not None)
        await pilot.press("f3")
        chart = app.screen.query_one("#chart-judge", LineChart)
        await _wait_for(pilot, lambda: chart.display and len(chart.lines) == 3)
        assert chart.border_title == "judge: 6 of 80 calls failed (8%); 6 completions got no reward"
        assert [ln.label for ln in chart.lines] == ["calls", "cache hits", "failures"]
