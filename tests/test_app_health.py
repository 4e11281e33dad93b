"""The GRPO doctor in the panel: the health strip, first-fire notices, the doctor's charts, completions drill-down."""

from __future__ import annotations

import time

from textual.widgets import DataTable, Static

from app.app import make_app
from app.widgets.chart import LineChart
from app.widgets.health_strip import RuleChip
from app.widgets.vram import VramPanel
from engine.config.sections import HealthConfig
from engine.dims import DIMENSIONS
from engine.store import RunStore
from engine.training.health_rules import Facts, replay
from tests.uifixtures import T0, make_fixture_run
from tests.uifixtures import text_of as _text, wait_for as _wait_for

RUN = "20260211-101500-snap"




def hacked_steps(n: int = 30) -> list[tuple[int, dict]]:
    """A GRPO run whose completions jump to max_completion_length (48) at step 21 while clipping rises."""
    steps = []
    for step in range(1, n + 1):
        length = 30.0 if step <= 20 else 48.0
        values = {"reward": 0.3 + step * 0.002, "reward_std": 0.03, "frac_reward_zero_std": 0.0, "entropy": 4.0 - step * 0.01,
                  "clip_ratio/region_mean": 0.0, "completions/mean_length": length,
                  "completions/clipped_ratio": 0.1 if step <= 20 else 1.0, "step_time_s": 1.2, "loss": 0.1, "grad_norm": 0.5}
        values |= {f"rewards/{d}/mean": 0.3 for d in DIMENSIONS} | {f"rewards/{d}/std": 0.05 for d in DIMENSIONS}
        steps.append((step, values))
    return steps


def hacked_run(root, event_time: float = T0):
    """The fixture run plus a length-hacking GRPO: its metrics, the health events the worker writes, completions."""
    run = make_fixture_run(root)
    steps = hacked_steps()
    _, changes = replay(steps, HealthConfig(), Facts(48, {d: 1 / 9 for d in DIMENSIONS}))
    with RunStore(run / "run.db") as s:
        rows = [("grpo", st, k, v, T0) for st, vals in steps for k, v in vals.items() if k in
                ("reward_std", "frac_reward_zero_std", "entropy", "clip_ratio/region_mean", "completions/clipped_ratio", "step_time_s")]
        s.add_metric_rows(rows)
        for ch in changes:
            s.event("grpo", "health", ch.message, dict(ch.state.as_dict(), step=ch.step, previous=ch.previous, first=ch.first))
        for step in (1, 5, 10, 15, 20, 25, 30):
            s.put_result("grpo", "completions", f"{step:07d}", {"step": step, "num_generations": 4, "max_completion_length": 48, "rows": [
                {"group": i // 4, "index": i % 4, "prompt": "Plan a trip \x1b[31m[bold]x[/bold]", "completion": f"step {step} completion {i} [red]r[/red]",
                 "scores": {d: 0.1 * (i + 1) for d in DIMENSIONS}, "reward": 0.1 * (i + 1), "advantage": (i % 4) - 1.5,
                 "length": 48 if i % 2 else 20, "clipped": bool(i % 2)} for i in range(8)]})
        s._conn.execute("UPDATE events SET time = ?", (event_time,))
        s._conn.execute("UPDATE logs SET time = ?", (T0,))
    return run


async def test_health_strip_shows_each_rule_and_explains_on_focus(runs_dir):
    hacked_run(runs_dir)
    app = make_app(RUN, runs_dir)
    async with app.run_test(size=(160, 50)) as pilot:
        await _wait_for(pilot, lambda: app.model.events)
        await pilot.press("f3")
        chip = app.screen.query_one("#rule-length_hacking", RuleChip)
        await _wait_for(pilot, lambda: chip.state == "alarm")
        assert app.screen.query_one("#rule-kl_divergence", RuleChip).state == "no data"  # never logged here
        assert app.screen.query_one("#rule-entropy_low", RuleChip).state == "ok"
        assert "1 alarm" in app.screen.query_one("#health-strip").border_title
        await pilot.press("h")
        for _ in range(12):
            if app.focused is chip:
                break
            await pilot.press("right")
        assert app.focused is chip
        explain = _text(app.screen.query_one("#health-explain", Static))
        assert "first fired at step 25" in explain and "max_completion_length" in explain
        charts = [w.border_title for w in app.screen.query("#doctor-grid LineChart")]
        assert {"reward std", "zero-std groups", "entropy", "clip ratio", "step time s"} <= set(charts)
        assert app.screen.query_one("#doctor-2", LineChart).lines[0].values.size == 30


async def test_a_rule_that_fires_now_is_notified_once(runs_dir):
    hacked_run(runs_dir, event_time=time.time())
    app = make_app(RUN, runs_dir)
    async with app.run_test(size=(160, 50)) as pilot:
        await _wait_for(pilot, lambda: any("length_hacking" in n.message for n in app._notifications))
        seen = app.model.version  # two more polls applied: a second notice would be up by now
        await _wait_for(pilot, lambda: app.model.version >= seen + 2)
        assert [n.message for n in app._notifications if "length_hacking" in n.message] == \
            ["grpo step 25: length_hacking: mean length 30 -> 39 of 48 tokens, clipped 0.10 -> 0.55"]


async def test_old_fires_of_a_reattached_run_are_not_notified(runs_dir):
    hacked_run(runs_dir)
    app = make_app(RUN, runs_dir)
    async with app.run_test(size=(160, 50)) as pilot:
        seen = app.model.version  # the events are read and two more polls applied: a notice would be up by now
        await _wait_for(pilot, lambda: app.model.version >= seen + 2)
        assert not any("length_hacking" in n.message for n in app._notifications)


async def test_click_on_the_reward_chart_opens_that_steps_completions(runs_dir):
    hacked_run(runs_dir)
    app = make_app(RUN, runs_dir)
    async with app.run_test(size=(160, 50)) as pilot:
        await _wait_for(pilot, lambda: app.model.get("grpo", "reward") is not None)
        await pilot.press("f3")
        chart = app.screen.query_one("#chart-reward", LineChart)
        await _wait_for(pilot, lambda: bool(chart.lines))
        plot_w = chart.size.width - 10
        # The plot spans steps 1..40 after a 10-column axis; the content starts inside a border and a padding column.
        x = 10 + int((24 - 1) / 39 * plot_w)
        await pilot.click("#chart-reward", offset=(2 + x, 3))
        await _wait_for(pilot, lambda: type(app.screen).__name__ == "CompletionsScreen")
        screen = app.screen
        table = screen.query_one(DataTable)
        await _wait_for(pilot, lambda: table.row_count == 8)
        title = _text(screen.query_one("#completions-title", Static))
        assert title.startswith("grpo step 25 "), title  # about step 24: the nearest sampled step
        row = table.get_row_at(1)
        assert str(row[0]) == "0" and str(row[1]) == "1" and str(row[4]) == "48" and str(row[5]) == "clipped"
        assert [str(c) for c in row[6:]] == ["0.20"] * 9
        await pilot.press("down")
        detail = _text(screen.query_one("#completion-text", Static))
        assert "[red]r[/red]" in detail and "\u241b[31m[bold]x[/bold]" in detail  # literal, never interpreted
        await pilot.press("right_square_bracket")
        assert _text(screen.query_one("#completions-title", Static)).startswith("grpo step 30 ")
        await pilot.press("right_square_bracket")  # the last one stays
        assert _text(screen.query_one("#completions-title", Static)).startswith("grpo step 30 ")
        await pilot.press("escape")
        assert type(app.screen).__name__ == "TrainingScreen"
        await pilot.press("l")
        await _wait_for(pilot, lambda: type(app.screen).__name__ == "CompletionsScreen")
        await _wait_for(pilot, lambda: "grpo step 30" in _text(app.screen.query_one("#completions-title", Static)))


def test_training_snapshot_with_the_health_strip(snap_compare, runs_dir, monkeypatch):
    fixed = {"sys_used_mb": 6144.0, "sys_total_mb": 24576.0, "sys_cpu": 37.0, "cores": 2}  # no live machine figures
    monkeypatch.setattr("app.screens.training.sample_host", lambda pid: dict(fixed))
    hacked_run(runs_dir)
    app = make_app(RUN, runs_dir)

    async def before(pilot):
        await _wait_for(pilot, lambda: app.model.events and app.model.get("grpo", "reward") is not None)
        await pilot.press("f3")

        def ready() -> bool:  # composed, the charts drawn (all 40 steps) and a host sample arrived
            vram, chart = app.screen.query(VramPanel), app.screen.query("#chart-reward")
            return bool(vram) and vram.first().border_title.startswith("RAM") and bool(chart) \
                and bool(chart.first().lines) and len(chart.first().lines[0].steps) == 40

        await _wait_for(pilot, ready)
        await pilot.press("h")
        for _ in range(6):
            await pilot.press("right")
        doctor = app.screen.query_one("#doctor-2", LineChart)
        await _wait_for(pilot, lambda: bool(doctor.lines) and doctor.lines[0].values.size == 30)
        await pilot.pause()

    assert snap_compare(app, terminal_size=(160, 50), run_before=before)
