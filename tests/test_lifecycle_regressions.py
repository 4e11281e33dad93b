"""One test per lifecycle race of issue 16: each failed on the code before the state machine (see its docstring)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from engine.runner import supervisor as sup
from engine.store import RunStore
from tests.conftest import ROOT, aba, write_config

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="kill and process-group semantics are POSIX")

ONE = '[run]\nstages = ["datagen"]\ncancel_grace_s = 10\n'
TWO = '[run]\nstages = ["datagen", "judge"]\ncancel_grace_s = 10\n'


@pytest.fixture
def busy_stages(monkeypatch):
    """datagen and judge run the fast test-only busy stage."""
    monkeypatch.setenv("ABA_STAGE_MODULES", "datagen=tests.stages.busy,judge=tests.stages.busy")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))


def _new_run(tmp_path, runs_dir, text: str, **busy) -> object:
    run_dir = sup.create_run(write_config(tmp_path, text), runs_dir)
    (run_dir / "busy.json").write_text(json.dumps(busy))
    return run_dir


def _row(run_dir, stage):
    with RunStore(run_dir / "run.db") as store:
        return store.stage(stage)


def _attempts(run_dir, stage):
    with RunStore(run_dir / "run.db") as store:
        return store.attempts(stage)


def _wait_for(run_dir, stage, statuses, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = _row(run_dir, stage)
        if row.status in statuses:
            return row
        time.sleep(0.02)
    raise AssertionError(f"{stage} never reached {statuses}")


def test_skip_landing_while_an_earlier_stage_runs_is_honoured(tmp_path, runs_dir, busy_stages):
    """Before: `drive` decided from rows read when it started, so the skipped judge ran and succeeded."""
    run_dir = _new_run(tmp_path, runs_dir, TWO, steps=60, delay=0.02)
    sup.launch(run_dir)
    _wait_for(run_dir, "datagen", {"running"})
    sup.skip(run_dir, "judge")
    sup.wait(run_dir, timeout_s=30)
    judge = _row(run_dir, "judge")
    assert judge.status == "skipped" and judge.attempts == 0
    assert not (run_dir / "judge" / "starts.txt").exists()
    assert _row(run_dir, "datagen").status == "succeeded"


def _request_cancel(run_dir, stage):
    with RunStore(run_dir / "run.db") as store:
        store.request_cancel(stage)


def test_cancel_arriving_while_the_worker_starts_is_kept(tmp_path, runs_dir, busy_stages, monkeypatch):
    """Before: start_attempt cleared cancel_requested, so a cancel between the driver's check and the start was
    erased and the stage ran to `succeeded`."""
    run_dir = _new_run(tmp_path, runs_dir, ONE, steps=250, delay=0.02)
    real_spawn = sup.spawn_worker

    def spawn_then_cancel(module, *rest, **kw):
        proc = real_spawn(module, *rest, **kw)
        if module == "engine.runner.worker":
            # The user's cancel lands right after the worker was spawned (from another process, in real life).
            t = threading.Thread(target=_request_cancel, args=(run_dir, "datagen"), daemon=True)
            t.start()
            t.join(1.0)
        return proc

    monkeypatch.setattr(sup, "spawn_worker", spawn_then_cancel)
    code = sup.drive(run_dir)
    row = _row(run_dir, "datagen")
    assert row.status == "cancelled", row
    assert code == 3


def test_cancel_of_a_stage_seen_pending_does_not_overwrite_its_start(tmp_path, runs_dir, busy_stages, monkeypatch):
    """Before: cancel() marked every stage it had seen pending `cancelled` without checking; the stage had just
    started, and its worker then wrote `succeeded` over it: reported cancelled, ended succeeded."""
    run_dir = _new_run(tmp_path, runs_dir, ONE, steps=40, delay=0.02)
    with RunStore(run_dir / "run.db") as store:
        seen_pending = store.stages()
    sup.launch(run_dir)
    _wait_for(run_dir, "datagen", {"running"})
    real_stages = RunStore.stages
    calls = []

    def stale_once(self):
        calls.append(1)
        return seen_pending if len(calls) == 1 else real_stages(self)

    monkeypatch.setattr(RunStore, "stages", stale_once)  # cancel reads the stages a moment before the driver started it
    sup.cancel(run_dir, "datagen", grace_s=10)
    monkeypatch.setattr(RunStore, "stages", real_stages)
    after_cancel = _row(run_dir, "datagen").status
    sup.wait(run_dir, timeout_s=20)
    final = _row(run_dir, "datagen")
    assert not (after_cancel == "cancelled" and final.status != "cancelled"), (after_cancel, final)
    assert [a["status"] for a in _attempts(run_dir, "datagen")] == [final.status]


def test_a_slow_driver_still_counts_one_attempt_per_worker(tmp_path, runs_dir, busy_stages, monkeypatch):
    """Before: the driver and the worker both called start_attempt; a worker that looked before the driver had
    written started its own attempt, and the driver then added a second: two attempts for one process."""
    run_dir = _new_run(tmp_path, runs_dir, ONE, steps=5, delay=0.01)
    real_spawn = sup.spawn_worker

    def spawn_then_stall(*args, **kw):
        proc = real_spawn(*args, **kw)
        time.sleep(3.0)  # the driver is descheduled right after the spawn
        return proc

    monkeypatch.setattr(sup, "spawn_worker", spawn_then_stall)
    code = sup.drive(run_dir)
    assert [(a["n"], a["status"]) for a in _attempts(run_dir, "datagen")] == [(1, "succeeded")]
    assert _row(run_dir, "datagen").attempts == 1 and code == 0
    assert len((run_dir / "datagen" / "starts.txt").read_text().splitlines()) == 1


def test_skip_or_cancel_of_a_stage_not_started_keeps_the_attempt_history(tmp_path, runs_dir, busy_stages):
    """Before: finish_stage on a stage that never started (skip, cancel) rewrote the previous attempt's row."""
    run_dir = _new_run(tmp_path, runs_dir, ONE, steps=20, delay=0.01, fail_at=3)
    sup.launch(run_dir)
    sup.wait(run_dir, timeout_s=30)
    assert [a["status"] for a in _attempts(run_dir, "datagen")] == ["failed"]
    sup.skip(run_dir, "datagen")
    assert _row(run_dir, "datagen").status == "skipped"
    assert [a["status"] for a in _attempts(run_dir, "datagen")] == ["failed"]
    with RunStore(run_dir / "run.db") as store:
        store.reset_stage("datagen")
    sup.cancel(run_dir, "datagen")
    assert _row(run_dir, "datagen").status == "cancelled"
    assert [a["status"] for a in _attempts(run_dir, "datagen")] == ["failed"]


@pytest.fixture
def stranger():
    """A process that is not any attempt's worker (in its own session, like a worker would be)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def _left_running_by(run_dir, pid: int, heartbeat_age_s: float) -> None:
    """A stage row left `running` by a worker that died with the machine, whose pid now belongs to someone else."""
    with RunStore(run_dir / "run.db") as store:
        store.start_attempt("datagen", pid)
    with sqlite3.connect(run_dir / "run.db") as conn:
        conn.execute("UPDATE heartbeats SET time = time - ?", (heartbeat_age_s,))


def test_a_reused_pid_with_a_stale_heartbeat_reads_crashed(tmp_path, runs_dir, stranger):
    """Before: liveness was the pid alone, so the stage stayed `running` as long as the stranger lived."""
    run_dir = _new_run(tmp_path, runs_dir, ONE)
    _left_running_by(run_dir, stranger.pid, heartbeat_age_s=3600)
    proc = aba("status", run_dir.name, "--json", timeout=60)
    assert proc.returncode == 0, proc.stderr
    datagen = next(s for s in json.loads(proc.stdout)["stages"] if s["name"] == "datagen")
    assert datagen["status"] == "crashed"
    assert stranger.poll() is None


def test_cancel_never_signals_a_process_that_is_not_the_attempts_own(tmp_path, runs_dir, stranger):
    """Before: cancel sent killpg(SIGTERM), then SIGKILL, to whatever process group had the recorded pid."""
    run_dir = _new_run(tmp_path, runs_dir, ONE)
    _left_running_by(run_dir, stranger.pid, heartbeat_age_s=0)
    sup.cancel(run_dir, grace_s=0.5)
    time.sleep(0.3)
    assert stranger.poll() is None, "cancel signalled a stranger"


def test_readonly_store_refuses_to_write(tmp_path):
    """Before: RunStore(readonly=True) only skipped migrations; every write went through."""
    with RunStore(tmp_path / "run.db", create=True) as store:
        store.init_run("r", "t", "c.toml", ["a"], ["a"])
    reader = RunStore(tmp_path / "run.db", readonly=True)
    try:
        assert [r.name for r in reader.stages()] == ["a"]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.log("a", "a reader wrote this")
    finally:
        reader.close()
    with RunStore(tmp_path / "run.db") as store:
        assert store.last_logs("a") == []
