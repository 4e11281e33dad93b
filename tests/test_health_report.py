"""The worker's side of the doctor (events and results in the run database) and what `aba health` and the report show."""

from __future__ import annotations

import json

from engine import config
from engine.dims import DIMENSIONS
from engine.reporting.health_table import gain_line, reward_gain
from engine.context import StageContext
from engine.store import RunStore
from engine.training.health_rules import Facts, HealthMonitor, HealthReporter
from tests.conftest import aba
from tests.test_app_health import hacked_steps
from tests.uifixtures import make_fixture_run


def test_reporter_writes_events_and_results_that_aba_health_and_the_report_show(runs_dir):
    run = make_fixture_run(runs_dir)
    cfg = config.load(run / "config.toml")
    with RunStore(run / "run.db") as store:
        ctx = StageContext("grpo", run, cfg, store)
        reporter = HealthReporter(ctx, HealthMonitor(cfg.health, Facts(48, {d: 1 / 9 for d in DIMENSIONS})))
        for step, values in hacked_steps():
            reporter.observe(step, values)
        events = [e.data for e in store.events(kind="health")]
        results = store.results("grpo", "health")
    fires = [(e["rule"], e["step"], e["state"]) for e in events if e["first"]]
    assert fires == [("length_hacking", 25, "alarm")]
    assert results["length_hacking"]["state"] == "alarm" and results["length_hacking"]["first_step"] == 25
    assert "kl_divergence" not in results  # never logged: no row until there is data
    proc = aba("health", run.name, "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["rule"]: r for r in json.loads(proc.stdout) if r["stage"] == "grpo"}
    assert rows["length_hacking"]["state"] == "alarm" and rows["length_hacking"]["first_step"] == 25
    assert rows["kl_divergence"]["state"] == "no data" and rows["entropy_low"]["state"] == "ok"
    text = aba("health", run.name).stdout
    assert "length_hacking" in text and "alarm" in text and "Try:" in text
    report = aba("report", run.name)
    assert report.returncode == 0, report.stderr
    md = (run / "report" / "report.md").read_text()
    assert "## Health (the GRPO doctor)" in md and "| grpo | length_hacking | alarm | 25 |" in md


def test_aba_health_on_a_run_without_health_data(runs_dir):
    run = make_fixture_run(runs_dir, with_metrics=False)
    proc = aba("health", run.name)
    assert proc.returncode == 0 and "no health data yet" in proc.stdout
    assert aba("health", "no-such-run").returncode == 2


def test_reward_gain_interval():
    flat = [0.3, 0.31, 0.29, 0.3, 0.32, 0.28, 0.3, 0.31, 0.29, 0.3] * 3
    g = reward_gain(flat)
    assert g["lo"] < 0 < g["hi"]
    rising = [0.28 + 0.003 * i + (0.01 if i % 2 else -0.01) for i in range(30)]
    g = reward_gain(rising)
    assert g["gain"] > 0 and g["lo"] > 0 and "95% bootstrap interval" in gain_line(g)
    assert reward_gain([0.1] * 19) is None
