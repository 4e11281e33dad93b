"""Exactly once per attempt: a GRPO killed (-9, driver and worker) twice and resumed has the metric series of a
clean run, one row per (stage, step, key), in every reader."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import Counter

import pytest

from engine import config
from engine.reporting.compare import is_wall_clock
from engine.runner import supervisor as sup
from engine.runner.procs import pid_alive
from engine.store import RunStore
from tests.conftest import aba, demo_variant, run_id_of
from tests.test_reproducibility import ONE_THREAD, prebuild_demo_base

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="kill -9 is POSIX")
STAGES = "datagen,judge,sft,grpo"
STEPS = 8


def _counts(run_dir, stage: str = "grpo") -> Counter:
    """Rows per (step, key) of a stage, the keys that are the same in every run (no clocks, no VRAM samples)."""
    with RunStore(run_dir / "run.db", readonly=True) as s:
        rows = s.metrics_since(0, stage=stage, limit=10**9)
    return Counter((r.step, r.key) for r in rows if not is_wall_clock(r.key) and not r.key.startswith("vram/"))


def _grpo_step(run_dir) -> int:
    with RunStore(run_dir / "run.db", readonly=True) as s:
        steps = s.metric_series("grpo", "loss")[1]
    return max(steps, default=0)


def _kill_driver_and_worker(run_dir, at_step: int, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while _grpo_step(run_dir) < at_step:
        assert time.monotonic() < deadline, "GRPO never reached the step to kill at"
        time.sleep(0.2)
    with RunStore(run_dir / "run.db", readonly=True) as s:
        driver, worker = s.run_info().get("driver_pid"), s.stage("grpo").pid
    for pid in (driver, worker):
        if pid:
            os.kill(pid, signal.SIGKILL)
    while any(pid and pid_alive(pid) for pid in (driver, worker)):
        time.sleep(0.1)


def test_grpo_killed_twice_and_resumed_has_one_row_per_step_like_a_clean_run(tmp_path, runs_dir):
    cfg = demo_variant(
        tmp_path, datagen__max_prompts=6, sft__max_steps=2, sft__per_device_train_batch_size=2, sft__min_score=0.3,
        grpo__max_steps=STEPS, grpo__num_generations=2, grpo__per_device_train_batch_size=2,
        grpo__gradient_accumulation_steps=1, grpo__max_completion_length=16, grpo__sample_every=1,
        run__checkpoint_steps=2,
    )
    prebuild_demo_base(tmp_path, config.load(cfg).run.seed)
    dirs = []
    for _ in range(2):
        proc = aba("run", str(cfg), "--stages", STAGES, "--detach", env=ONE_THREAD)
        assert proc.returncode == 0, proc.stderr
        dirs.append(sup.resolve_run(run_id_of(proc), runs_dir))
    clean, hurt = dirs
    try:
        for at in (3, 6):  # killed after steps 3 and 6 were logged: checkpoints 2 and 6 (or 4) are resumed from
            _kill_driver_and_worker(hurt, at)
            proc = aba("resume", hurt.name, "--detach", env=ONE_THREAD)
            assert proc.returncode == 0, proc.stderr
        for d in dirs:
            rows = sup.wait(d, timeout_s=900)
            bad = [(r.name, r.status, r.reason) for r in rows if r.selected and r.status != "succeeded"]
            assert not bad, bad
    finally:
        for d in dirs:
            sup.cancel(d, grace_s=2)
    with RunStore(hurt / "run.db", readonly=True) as s:
        assert s.stage("grpo").attempts == 3
        samples = Counter((r["step"]) for r in s.samples("grpo", limit=1000))
        backend_events = [e for e in s.events("grpo") if e.kind == "backend"]
    with RunStore(clean / "run.db", readonly=True) as s:
        clean_samples = Counter((r["step"]) for r in s.samples("grpo", limit=1000))
    a, b = _counts(clean), _counts(hurt)
    print(f"\nrows per (step, key): clean {sum(a.values())} rows / {len(a)} pairs; killed twice and resumed"
          f" {sum(b.values())} rows / {len(b)} pairs; pairs with more than one row: {sum(v > 1 for v in b.values())}")
    assert a == b and max(b.values()) == 1  # the clean run's series, step for step, one row per (step, key)
    assert sorted({step for step, _ in b}) == list(range(1, STEPS + 1))
    assert samples == clean_samples and len(backend_events) == 1  # the sampled completions of each step, once
    # Every reader reads the one series: `aba metrics` says n = STEPS for the reward.
    proc = aba("metrics", hurt.name, "--stage", "grpo", "--json")
    assert proc.returncode == 0, proc.stderr
    assert sorted(r["step"] for r in json.loads(proc.stdout) if r["key"] == "reward") == list(range(1, STEPS + 1))
