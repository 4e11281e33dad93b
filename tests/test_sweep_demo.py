"""The issue's done-when, on the demo config: a 2 x 2 sweep over a reward weight and the GRPO learning rate queues
4 runs, trains SFT once (the other three reuse its adapter, and GRPO trains on it), runs them one at a time, survives
a killed queue driver, and `aba sweep-report` ranks them with intervals and writes the best config. The runs report
to TensorBoard and trackio; their event file and local project, read back with their own readers, hold the run
database's reward series, and TRL's completions table is kept as parquet in the run folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from engine import config as config_mod
from engine.runner import supervisor as sup
from engine.store import RunStore
from engine.sweep import queue as q
from tests.conftest import DEMO, aba
from tests.test_reproducibility import ONE_THREAD, prebuild_demo_base
from tests.uifixtures import make_fixture_run

TINY = ["--set", "sft.max_steps=2", "--set", "sft.min_score=0.0", "--set", "grpo.max_steps=3",
        "--set", "grpo.per_device_train_batch_size=4", "--set", "grpo.gradient_accumulation_steps=1",
        "--set", "grpo.max_completion_length=16", "--set", "eval.max_new_tokens=8", "--set", 'eval.models=["base","grpo"]',
        "--set", "grpo.sample_every=1", "--set", 'run.report_to=["tensorboard","trackio"]']


def _wait(cond, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.5)
    raise AssertionError("condition not met in time")


def test_weight_sweep_trains_sft_once_runs_in_turn_ranks_and_tracks(tmp_path, runs_dir):
    src = make_fixture_run(runs_dir, "20260211-101500-src", traces=12, with_metrics=False)
    prebuild_demo_base(tmp_path)
    proc = aba("sweep", str(DEMO), "--data-from", src.name, "--grid", "grpo.reward_weights.entropy_reduction=0.1,0.5",
               "--grid", "grpo.learning_rate=1e-3,1e-2", "--stages", "sft,grpo,eval", *TINY, env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr
    sweep_id = proc.stdout.split()[1]
    ids = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("queued ")]
    assert len(ids) == 4
    try:
        # Kill the queue driver while the second run trains; the next aba command resumes the queue.
        _wait(lambda: (q.read(runs_dir)["entries"][1]["state"] == "running"), timeout=900)
        os.kill(q.read(runs_dir)["driver"]["pid"], signal.SIGKILL)
        _wait(lambda: not q.driver_alive(q.read(runs_dir)), timeout=30)
        assert aba("queue", env=ONE_THREAD).returncode == 0
        _wait(lambda: not any(e["state"] in q.ACTIVE for e in q.read(runs_dir)["entries"]), timeout=1800)
    finally:
        for rid in ids:
            if (runs_dir / rid / "run.db").exists():
                sup.cancel(runs_dir / rid, grace_s=2)
    spans, trained, reused = [], [], []
    for rid in ids:
        with RunStore(runs_dir / rid / "run.db", readonly=True) as s:
            rows = [r for r in s.stages() if r.selected]
            assert {r.name: r.status for r in rows} == {"sft": "succeeded", "grpo": "succeeded", "eval": "succeeded"}, \
                [(r.name, r.reason) for r in rows]
            spans.append((min(r.started for r in rows), max(r.ended for r in rows)))
            source = s.sft_source()
            (reused if source["reused"] else trained).append(rid)
            sft_logs = [r.message for r in s.logs_since(0, "sft")]
            grpo_logs = [r.message for r in s.logs_since(0, "grpo")]
            _, _, losses = s.metric_series("sft", "loss")
            if source["reused"]:
                assert not losses and any("SFT reused" in m and source["cache"] in m for m in sft_logs)
            else:
                assert losses
            assert any("starting from the SFT adapter merged" in m for m in grpo_logs)
    assert len(trained) == 1 and len(reused) == 3, (trained, reused)
    with RunStore(runs_dir / trained[0] / "run.db", readonly=True) as s:
        hash0 = s.sft_source()["hash"]
    weights = (runs_dir / trained[0] / "sft" / "adapter" / "adapter_model.safetensors").read_bytes()
    for rid in reused:
        with RunStore(runs_dir / rid / "run.db", readonly=True) as s:
            src_rec = s.sft_source()
        assert src_rec["hash"] == hash0 and src_rec["source_run"] == trained[0]
        assert (runs_dir / rid / "sft" / "adapter" / "adapter_model.safetensors").read_bytes() == weights
    spans.sort()
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end, spans  # one run at a time on a CPU

    report = aba("sweep-report", sweep_id, "--json")
    assert report.returncode == 0, report.stderr
    out = json.loads(report.stdout)
    assert [r["rank"] for r in out["runs"]] == [1, 2, 3, 4]
    values = [r["value"] for r in out["runs"]]
    assert values == sorted(values, reverse=True)
    for r in out["runs"]:
        assert r["lo"] <= r["value"] <= r["hi"] and r["n"] == 12
    assert out["best"] == out["runs"][0]["id"]
    assert set(out["effects"]) == {"grpo.reward_weights.entropy_reduction", "grpo.learning_rate"}
    assert set(out["effects"]["grpo.reward_weights.entropy_reduction"]["dimension_slopes"]) >= {"entropy_reduction"}
    assert open(out["plot"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    best = config_mod.load(out["best_config"])  # ready for `aba run`
    best_params = out["runs"][0]["params"]
    assert best.grpo.learning_rate == best_params["grpo.learning_rate"]
    assert best.grpo.reward_weights["entropy_reduction"] == best_params["grpo.reward_weights.entropy_reduction"]
    table = aba("sweep-report", sweep_id)
    assert table.returncode == 0 and "best config" in table.stdout

    # Trackers: TensorBoard's own reader and trackio's own storage hold the run database's reward series.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rid = ids[0]
    with RunStore(runs_dir / rid / "run.db", readonly=True) as s:
        _, steps, rewards = s.metric_series("grpo", "reward")
        name = s.run_info()["name"]
    acc = EventAccumulator(str(runs_dir / rid / "tracking" / "tensorboard" / "grpo"))
    acc.Reload()
    tb = {e.step: e.value for e in acc.Scalars("train/reward")}
    assert sorted(tb) == steps and all(abs(tb[st] - v) < 1e-5 for st, v in zip(steps, rewards))
    assert "aba/config/text_summary" in acc.Tags()["tensors"]
    code = ("import json, os, sys; os.environ['TRACKIO_DIR'] = sys.argv[1]\n"
            "from trackio.sqlite_storage import SQLiteStorage\n"
            # trackio's own step counts log calls (TRL's completions tables are logged too); the trainer's step is
            # the row's train/global_step
            "print(json.dumps([(r.get('train/global_step'), r.get('train/reward'))"
            " for r in SQLiteStorage.get_logs(sys.argv[2], sys.argv[3])]))")
    read = subprocess.run([sys.executable, "-c", code, str(runs_dir / "trackio"), "aba-demo", f"{name} [{rid}/grpo]"],
                          capture_output=True, text=True, timeout=120)
    assert read.returncode == 0, read.stderr
    tr = {int(st): v for st, v in json.loads(read.stdout) if v is not None}
    assert sorted(tr) == steps and all(abs(tr[st] - v) < 1e-5 for st, v in zip(steps, rewards))
    import pyarrow.parquet as pq

    parts = sorted((runs_dir / rid / "grpo" / "checkpoints" / "completions").glob("completions_*.parquet"))
    assert parts
    table = pq.read_table(parts[-1])
    assert {"step", "prompt", "completion", "advantage"} <= set(table.column_names) and table.num_rows > 0
