"""Supervisor and workers: detached stages, crash detection under kill -9, cancel, resume, CLI exit codes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from engine.runner import supervisor as sup
from engine.store import RunStore
from tests.conftest import ROOT, write_config

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="kill -9 semantics are POSIX")

CFG = '[run]\nstages = ["smoke"]\ncancel_grace_s = 10\n'


def _aba(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


def _wait_status(run_dir, stage, statuses, timeout=15.0):
    deadline = time.monotonic() + timeout
    with RunStore(run_dir / "run.db") as store:
        while time.monotonic() < deadline:
            row = sup.refresh(store)
            row = next(r for r in row if r.name == stage)
            if row.status in statuses:
                return row
            time.sleep(0.05)
    raise AssertionError(f"{stage} never reached {statuses}")


def test_run_succeeds_and_first_line(tmp_path, busy_env, runs_dir):
    cfg = write_config(tmp_path, CFG)
    proc = _aba("run", str(cfg), env_extra={"BUSY_STEPS": "30"})
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith("run ")
    run_id = first.split()[1]
    status = json.loads(_aba("status", run_id, "--json").stdout)
    smoke = next(s for s in status["stages"] if s["name"] == "smoke")
    assert smoke["status"] == "succeeded" and smoke["attempts"] == 1
    rows = json.loads(_aba("metrics", run_id, "--stage", "smoke", "--json").stdout)
    assert {"step", "key", "value", "time"} <= set(rows[0]) and len(rows) == 30 * 20


def test_failed_stage_exit_1_with_reason(tmp_path, busy_env):
    cfg = write_config(tmp_path, CFG)
    proc = _aba("run", str(cfg), env_extra={"BUSY_STEPS": "30", "BUSY_FAIL_AT": "5"})
    assert proc.returncode == 1
    assert "RuntimeError: asked to fail" in proc.stderr


def test_unknown_stage_exit_2(tmp_path):
    cfg = write_config(tmp_path, CFG)
    proc = _aba("run", str(cfg), "--stages", "sfft")
    assert proc.returncode == 2 and "did you mean 'sft'" in proc.stderr and "Traceback" not in proc.stderr


def test_kill_9_mid_write_20_times(tmp_path, busy_env, runs_dir, monkeypatch):
    """kill -9 at a random moment: integrity stays ok and the stage reads crashed within 5 s."""
    monkeypatch.setenv("BUSY_STEPS", "100000")
    monkeypatch.setenv("BUSY_DELAY", "0")
    cfg = write_config(tmp_path, CFG)
    rng = random.Random(7)
    for _ in range(20):
        run_dir = sup.start(cfg, runs_dir)
        row = _wait_status(run_dir, "smoke", {"running"})
        # Let it write for a while, then kill the worker hard.
        with RunStore(run_dir / "run.db") as store:
            deadline = time.monotonic() + 5
            while store.last_metric_id() == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(row.pid, signal.SIGKILL)
        t0 = time.monotonic()
        crashed = _wait_status(run_dir, "smoke", {"crashed"}, timeout=5.0)
        assert time.monotonic() - t0 < 5.0
        assert "SIGKILL" in crashed.reason or "gone without a final status" in crashed.reason
        with RunStore(run_dir / "run.db") as store:
            assert store.integrity_check() == "ok"
        sup.wait(run_dir, timeout_s=10)


def test_crash_noticed_when_driver_is_gone_too(tmp_path, busy_env, runs_dir, monkeypatch):
    monkeypatch.setenv("BUSY_STEPS", "100000")
    cfg = write_config(tmp_path, CFG)
    run_dir = sup.start(cfg, runs_dir)
    row = _wait_status(run_dir, "smoke", {"running"})
    with RunStore(run_dir / "run.db") as store:
        driver = store.run_info()["driver_pid"]
        while not any("busy from step" in r.message for r in store.last_logs("smoke", 5)):
            time.sleep(0.05)
    os.kill(driver, signal.SIGKILL)
    os.kill(row.pid, signal.SIGKILL)
    crashed = _wait_status(run_dir, "smoke", {"crashed"}, timeout=5.0)
    assert "gone without a final status" in crashed.reason and "busy from step 0" in crashed.reason


def test_cancel_then_resume_continues_from_checkpoint(tmp_path, busy_env, runs_dir, monkeypatch):
    monkeypatch.setenv("BUSY_STEPS", "400")
    monkeypatch.setenv("BUSY_DELAY", "0.02")
    cfg = write_config(tmp_path, CFG)
    run_dir = sup.start(cfg, runs_dir)
    _wait_status(run_dir, "smoke", {"running"})
    with RunStore(run_dir / "run.db") as store:  # some steps done (20 metric rows a step), far from the 400th
        deadline = time.monotonic() + 30
        while store.last_metric_id() < 20 * 20 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert sup.cancel(run_dir, grace_s=10) == ["smoke"]
    row = _wait_status(run_dir, "smoke", {"cancelled"})
    assert "checkpoint saved" in row.reason
    ckpt = json.loads((run_dir / "smoke" / "checkpoint.json").read_text())["step"]
    assert 0 < ckpt < 400
    sup.wait(run_dir, timeout_s=10)
    sup.resume(run_dir)
    row = _wait_status(run_dir, "smoke", {"succeeded"}, timeout=60)
    assert row.attempts == 2
    with RunStore(run_dir / "run.db") as store:
        steps = [r.step for r in store.metrics_since(0, stage="smoke") if r.key == "m1"]
    # The second attempt starts where the first stopped: every step once, none repeated.
    assert steps == list(range(400))


def test_cancel_kills_after_grace(tmp_path, runs_dir, monkeypatch):
    """A stage that ignores the polite request is killed when the grace period runs out."""
    monkeypatch.setenv("ABA_STAGE_MODULES", "smoke=tests.stages.stubborn")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    cfg = write_config(tmp_path, CFG)
    run_dir = sup.start(cfg, runs_dir)
    row = _wait_status(run_dir, "smoke", {"running"})
    with RunStore(run_dir / "run.db") as store:
        while not any(r.message == "stubborn" for r in store.last_logs("smoke", 5)):
            time.sleep(0.05)
    t0 = time.monotonic()
    sup.cancel(run_dir, grace_s=1.0)
    assert time.monotonic() - t0 < 5
    row = _wait_status(run_dir, "smoke", {"cancelled"})
    assert "grace period" in row.reason
    assert not sup.pid_alive(row.pid)
