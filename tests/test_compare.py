"""`aba compare`, `aba runs`, `aba report` over several runs, and the statistics under them."""

from __future__ import annotations

import json

import pytest

from engine import config
from engine.reporting.compare import diff_interval, is_wall_clock
from engine.runner import supervisor as sup
from tests.conftest import DEMO, aba, run_id_of
from tests.test_runs_screen import A, B, C, make_three_runs

LR = config.load(DEMO).grpo.learning_rate  # the demo's own GRPO learning rate


def _start(*extra: str) -> str:
    proc = aba("run", str(DEMO), "--stages", "datagen", "--detach", *extra)
    assert proc.returncode == 0, proc.stderr
    return run_id_of(proc)


def test_compare_two_demo_runs_lists_exactly_the_key_that_differs(runs_dir):
    a = _start()
    b = _start("--set", "grpo.learning_rate=5e-5")
    for run_id in (a, b):
        sup.wait(sup.resolve_run(run_id, runs_dir), timeout_s=120)
    proc = aba("compare", a, b, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["config_diff"] == [{"key": "grpo.learning_rate", "a": LR, "b": 5e-5}]
    assert out["tournament"] is None and out["b"]["name"] == "demo grpo.learning_rate=5e-05"
    assert "datagen/llm/tokens_in" in out["shared_metric_keys"]
    text = aba("compare", a, b)
    assert text.returncode == 0 and "grpo.learning_rate" in text.stdout and "data.from_run" not in text.stdout
    runs = json.loads(aba("runs", "--json").stdout)
    assert {r["id"]: r["name"] for r in runs} == {a: "demo", b: "demo grpo.learning_rate=5e-05"}
    assert all(r["data"] == "generated" and r["stages"] == {"datagen": "succeeded"} for r in runs)


def test_bad_set_key_is_one_line(runs_dir):
    proc = aba("run", str(DEMO), "--set", "grpo.learning_rat=5e-5", "--detach")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "did you mean 'grpo.learning_rate'" in proc.stderr and not list(runs_dir.iterdir())


def test_runs_and_report_over_three_runs(runs_dir):
    make_three_runs(runs_dir)
    runs = {r["id"]: r for r in json.loads(aba("runs", "--json").stdout)}
    assert runs[B]["checklist_passed"] == 3 and runs[B]["rating"]["rating"] == 1012.0
    assert runs[B]["grpo_steps_averaged"] == 10 and runs[B]["grpo_reward"] == pytest.approx(0.35 + 0.006 * 35.5)
    assert runs[C]["data"] == f"run {A}" and runs[C]["duration_s"] == 65 and runs[C]["sft_loss"] == pytest.approx(1.7)
    out = json.loads(aba("compare", A, B, "--json").stdout)
    tour = out["tournament"]["ratings"]
    assert out["tournament"]["prompts"] == 3 and tour[f"B:{B}"]["rating"] > tour[f"A:{A}"]["rating"]
    assert tour[f"B:{B}"]["wins"] == 3 and tour[f"A:{A}"]["losses"] == 3
    held = out["heldout_deltas"]
    assert held["models"] == ["grpo", "grpo"] and held["dims"]["helpfulness"]["delta"] == pytest.approx(0.2)
    proc = aba("report", A, B, C)
    assert proc.returncode == 0, proc.stderr
    text = open(proc.stdout.strip(), encoding="utf-8").read()
    assert f"| grpo.learning_rate | {LR:g} | 5e-05 | {LR:g} |" in text
    assert f"## {B} minus {A}" in text and "grpo_reward.png" in text and "Final models head to head" in text


def test_statistics():
    assert is_wall_clock("step_time_s") and is_wall_clock("entropy_reduction/step_time_s") and not is_wall_clock("loss")
    assert is_wall_clock("judge/wall_s") and is_wall_clock("vram/used_mb") and not is_wall_clock("vram/estimate_mb")
    mean, lo, hi = diff_interval([1.0, 1.1, 0.9, 1.0], [2.0, 2.1, 1.9, 2.0])
    assert mean == pytest.approx(1.0) and lo < 1.0 < hi and lo > 0.8
    assert diff_interval([], [1.0]) is None
