"""Cancel keeps the work: the grace before the kill follows the measured step time, and says how long it may take."""

from __future__ import annotations

import os
import time

from engine.runner import supervisor as sup
from engine.runner.grace import stop_grace
from engine.store import RunStore
from tests.conftest import ROOT, demo_variant


def test_slow_steps_still_end_in_a_checkpoint(tmp_path, runs_dir, monkeypatch):
    # Steps of ~3 s against run.cancel_grace_s = 1: a fixed grace would kill the stage mid-step, checkpoint lost.
    monkeypatch.setenv("ABA_STAGE_MODULES", "sft=tests.stages.slow_sft")
    monkeypatch.setenv("SLOW_STEP_S", "3")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    cfg = demo_variant(tmp_path, sft__max_steps=40, run__checkpoint_steps=100, run__cancel_grace_s=1.0)
    run_dir = sup.start(cfg, runs_dir, ["sft"])
    with RunStore(run_dir / "run.db") as store:
        deadline = time.monotonic() + 540
        while time.monotonic() < deadline and len(store.metric_series("sft", "step_time_s")[2]) < 2:
            time.sleep(0.5)
        stepped = len(store.metric_series("sft", "step_time_s")[2])
        assert stepped >= 2, f"the slow stage never stepped: {store.stage('sft')} {[m.message for m in store.logs_since(0)][-5:]}"
        grace, line = stop_grace(store, "sft", 1.0)
    assert grace >= 6.0 and "2 x the slowest recent step" in line
    sup.cancel(run_dir)
    sup.wait(run_dir, timeout_s=60)
    with RunStore(run_dir / "run.db") as store:
        row = store.stage("sft")
        logs = [log.message for log in store.logs_since(0, "sft")]
    assert row.status == "cancelled" and "checkpoint saved" in (row.reason or ""), row.reason
    assert any("may take up to" in m for m in logs)
    assert sorted((run_dir / "sft" / "checkpoints").glob("checkpoint-*")), "cancel must leave a checkpoint"


def test_grace_is_the_configured_one_until_a_step_is_timed(tmp_path):
    from tests.conftest import DEMO

    with RunStore(tmp_path / "run.db", create=True) as store:
        store.init_run("r", "t", str(DEMO), ["grpo", "grpo-dims"], ["grpo", "grpo-dims"])
        assert stop_grace(store, "grpo", 30.0)[0] == 30.0
        for step, t in enumerate([4.0, 21.5, 9.0], 1):
            store.add_metrics("grpo", step, {"step_time_s": t, "loss": 1.0})
        store.add_metrics("grpo-dims", 1, {"entropy_reduction/step_time_s": 40.0})
        assert stop_grace(store, "grpo", 30.0)[0] == 43.0  # 2 x 21.5 s
        assert stop_grace(store, "grpo", 60.0)[0] == 60.0
        assert stop_grace(store, "grpo-dims", 30.0)[0] == 80.0  # prefixed step times count too
