"""An honest smoke verdict: an OOM, even one the fallback recovered from, fails Step 0 and the report says why."""

from __future__ import annotations

import json

from engine.runner import supervisor as sup
from engine.store import RunStore
from tests.conftest import aba, demo_variant, run_id_of


def test_smoke_fails_on_an_oom_and_reports_what_it_measured(tmp_path, runs_dir):
    cfg = demo_variant(tmp_path, smoke__sft_steps=3, smoke__grpo_steps=2, run__checkpoint_steps=1)
    proc = aba("run", str(cfg), "--stages", "smoke", env={"ABA_FAULT": "oom@smoke:2"})
    run_dir = sup.resolve_run(run_id_of(proc), runs_dir)
    with RunStore(run_dir / "run.db") as store:
        report = store.results("smoke", "report")["summary"]
        row = store.stage("smoke")
        estimates = store.events("smoke", kind="estimate")
    assert proc.returncode == 1 and row.status == "failed", json.dumps(report)
    assert report["passed"] is False
    assert "ran out of GPU memory (1 OOM fallback(s) taken)" in report["problems"]
    assert "per_device_train_batch_size" in report["fallbacks"][0]  # what the fallback did
    # Both stages still ran every step after the fallback, and the report carries what was measured and estimated.
    assert report["sft_steps"] == 3 and report["grpo_steps"] == 2
    assert report["backend"] == "standard" and report["torch_peak_gb"] is None  # CPU: no CUDA peak to measure
    assert report["sft_estimate_gb"] > 0 and report["grpo_estimate_gb"] > 0 and len(estimates) >= 3
    assert "smoke test failed on standard" in (row.reason or "")
