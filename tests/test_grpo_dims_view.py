"""grpo-dims can be watched: its per-dimension metrics chart (one dimension at a time, picked with [ ]), its
progress counts over the whole stage, its health rules are labelled by dimension (panel, `aba health`, report),
and the doctor's judge rule reads the judge's failed share."""

from __future__ import annotations

import json

from transformers import TrainerControl, TrainerState, TrainingArguments

from app.app import make_app
from app.widgets.chart import LineChart
from app.widgets.health_strip import HealthStrip, RuleChip
from engine import config as config_mod
from engine.reporting.health_table import health_rows, health_section
from engine.context import StageContext
from engine.store import RunStore
from engine.training.callbacks import StoreCallback
from engine.training.health_rules import HealthMonitor, HealthReporter
from tests.conftest import aba
from tests.uifixtures import make_fixture_run, text_of, wait_for

DIMS = ("entropy_reduction", "helpfulness")


def _grpo_dims_run(runs_dir, failed_share: float = 0.5):
    """A grpo-dims stage's rows as its worker writes them: per-dimension metrics, and the doctor's rules run by the
    real HealthReporter (one per dimension, as train_grpo makes them) on TRL-shaped logs."""
    run = make_fixture_run(runs_dir, with_metrics=False)
    cfg = config_mod.load(run / "config.toml")
    with RunStore(run / "run.db") as store:
        store._conn.execute("UPDATE stages SET status = 'succeeded', attempts = 1 WHERE name = 'grpo-dims'")
        ctx = StageContext("grpo-dims", run, cfg, store)
        for j, dim in enumerate(DIMS):
            reporter = HealthReporter(ctx, HealthMonitor(cfg.health), prefix=f"{dim}/")
            for step in range(1, 13):
                logs = {"reward": 0.2 + 0.01 * step * (j + 1), f"rewards/{dim}/mean": 0.2 + 0.01 * step,
                        f"rewards/{dim}/std": 0.1, "loss": 0.5, "kl": 0.001, "entropy": 1.0, "grad_norm": 1.0,
                        "frac_reward_zero_std": 0.0}
                ctx.metrics(step, {f"{dim}/judge/failed_share": failed_share if j == 0 else 0.0})  # JudgeWatch's row
                ctx.metrics(step, {f"{dim}/{k}": v for k, v in logs.items()})
                reporter.observe(step, logs)
    return run


def test_judge_rule_reads_the_failed_share_and_rows_are_labelled_by_dimension(runs_dir):
    run = _grpo_dims_run(runs_dir)
    with RunStore(run / "run.db", readonly=True) as store:
        rows = [r for r in health_rows(store) if r["stage"] == "grpo-dims"]
        report = "\n".join(health_section(store, run))
    judge = {r["dimension"]: r for r in rows if r["rule"] == "judge_failures"}
    assert judge[DIMS[0]]["state"] == "alarm" and judge[DIMS[1]]["state"] == "ok"  # it has data: not "no data"
    assert {r["dimension"] for r in rows} == set(DIMS)  # every rule once per dimension, none unlabelled
    assert len(rows) == 2 * len({r["rule"] for r in rows})
    assert f"| grpo-dims {DIMS[0]} | judge_failures | alarm |" in report
    out = aba("health", run.name, "--json", timeout=60)
    cli = [r for r in json.loads(out.stdout) if r["stage"] == "grpo-dims"]
    assert {(r["dimension"], r["rule"]) for r in cli} == {(r["dimension"], r["rule"]) for r in rows}


def test_grpo_dims_progress_counts_over_the_whole_stage(runs_dir):
    run = make_fixture_run(runs_dir, with_metrics=False)
    with RunStore(run / "run.db") as store:
        ctx = StageContext("grpo-dims", run, config_mod.load(run / "config.toml"), store)
        args, control = TrainingArguments(output_dir=str(run / "tmp"), max_steps=6, report_to=[]), TrainerControl()
        seen = []
        for i, dim in enumerate(DIMS):
            cb = StoreCallback(ctx, prefix=f"{dim}/", total_steps=6, progress_span=(i * 6, len(DIMS) * 6))
            state = TrainerState(max_steps=6)
            cb.on_train_begin(args, state, control)
            for step in range(1, 7):
                state.global_step = step
                cb.on_step_begin(args, state, control)
                cb.on_step_end(args, state, control)
                row = store.stage("grpo-dims")
                seen.append((row.progress, row.progress_total))
    assert seen[0] == (1, 12) and seen[6] == (7, 12) and seen[-1] == (12, 12)  # never back to 1/6


async def test_training_charts_one_dimension_at_a_time(runs_dir):
    run = _grpo_dims_run(runs_dir)
    app = make_app(run.name, runs_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f3")
        screen = app.screen
        await wait_for(pilot, lambda: screen.run_stages(app.model) == ["sft", "grpo", "grpo-dims"])
        while screen.stage != "grpo-dims":
            await pilot.press("tab")
        await wait_for(pilot, lambda: screen.stage == "grpo-dims" and screen.prefix == f"{DIMS[1]}/")
        chart = screen.query_one("#chart-reward", LineChart)
        await wait_for(pilot, lambda: [ln.label for ln in chart.lines] == ["reward", "HLP"])
        assert DIMS[1] in text_of(screen.query_one("#training-title"))
        strip = screen.query_one(HealthStrip)
        assert DIMS[1] in str(strip.border_title)
        assert screen.query_one("#rule-judge_failures", RuleChip).state == "ok"
        await pilot.press("right_square_bracket")  # the other dimension's LoRA
        await wait_for(pilot, lambda: [ln.label for ln in chart.lines] == ["reward", "ENT"])
        assert screen.prefix == f"{DIMS[0]}/" and DIMS[0] in str(strip.border_title)
        assert screen.query_one("#rule-judge_failures", RuleChip).state == "alarm"
