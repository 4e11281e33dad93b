"""The stage state machine: guarded transitions, one attempt counter, cancel requests kept, process identity."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading

import pytest

from engine.runner import liveness
from engine.runner.procs import ask_to_stop, kill_tree, process_started, same_process
from engine.store import FINAL, MIGRATIONS, SCHEMA_VERSION, STATUSES, RunStore, StoreError
from engine.store.stages import TRANSITIONS
from tests.conftest import ROOT


def _store(tmp_path) -> RunStore:
    s = RunStore(tmp_path / "run.db", create=True)
    s.init_run("r1", "test", "c.toml", ["a", "b"], ["a", "b"])
    return s


def test_every_status_is_reached_and_left_only_as_written_down():
    targets = set().union(*(t.targets for t in TRANSITIONS.values()))
    assert targets == set(STATUSES)
    assert all(t.sources <= set(STATUSES) for t in TRANSITIONS.values())
    # Only the driver's start makes a stage run; nothing leaves `running` except to a final status.
    assert [e for e, t in TRANSITIONS.items() if "running" in t.targets] == ["start"]
    assert all(t.targets <= FINAL for t in TRANSITIONS.values() if "running" in t.sources)


def test_start_counts_once_and_ends_once(tmp_path):
    s = _store(tmp_path)
    spawned = []
    out = s.begin_attempt("a", lambda n: (spawned.append(n) or 4242, 1.5))
    assert (out.status, out.attempt, spawned) == ("running", 1, [1])
    assert s.begin_attempt("a", lambda n: pytest.fail("a running stage was started again")).attempt is None
    assert s.end_attempt("a", 1, "succeeded")
    assert not s.end_attempt("a", 1, "crashed")  # a late crash noticer loses
    assert not s.end_attempt("a", 2, "failed")  # an attempt that does not exist
    row = s.stage("a")
    assert (row.status, row.attempts, row.pid, row.pid_started) == ("succeeded", 1, 4242, 1.5)
    assert [(a["n"], a["status"]) for a in s.attempts("a")] == [(1, "succeeded")]


def test_concurrent_enders_exactly_one_wins(tmp_path):
    s = _store(tmp_path)
    s.start_attempt("a", 1)
    path = tmp_path / "run.db"
    wins, barrier = [], threading.Barrier(4)

    def end(status):
        with RunStore(path) as own:
            barrier.wait()
            if own.end_attempt("a", 1, status):
                wins.append(status)

    threads = [threading.Thread(target=end, args=(st,)) for st in ("succeeded", "crashed", "cancelled", "failed")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert s.stage("a").status == wins[0] == s.attempts("a")[0]["status"]


def test_a_cancel_waiting_for_a_pending_stage_stops_the_start(tmp_path):
    s = _store(tmp_path)
    s.start_attempt("a", 1)
    assert s.request_cancel("a").status == "running"
    # The request survives until the attempt has seen it: the worker's start-up sees it...
    assert s.accept_attempt("a", 1, 1) == "cancel"
    assert s.heartbeat("a", 1) is True
    assert s.end_attempt("a", 1, "cancelled", "cancelled before it started")
    # ...and a pending stage with a request is cancelled instead of started (no attempt touched).
    assert s.request_cancel("b").status == "cancelled"
    assert s.begin_attempt("b", lambda n: pytest.fail("spawned a cancelled stage")).status == "cancelled"
    assert s.attempts("b") == []
    assert s.request_cancel("a") is None  # already ended: nothing to ask


def test_skip_reset_and_heartbeat_are_guarded(tmp_path):
    s = _store(tmp_path)
    s.start_attempt("a", 7)
    assert s.skip_stage("a") == "running" and s.stage("a").status == "running"
    assert s.reset_stage("a") is False
    assert s.accept_attempt("a", 1, 8) == "gone"  # another process's attempt
    assert s.accept_attempt("a", 2, 7) == "gone"  # an attempt that was never started
    assert s.heartbeat("a", 7) is False
    s.end_attempt("a", 1, "failed", "boom", 1)
    beat = s.stage("a").heartbeat
    assert s.heartbeat("a", 7) is True  # the attempt is over: stop, and no heartbeat is written
    assert s.stage("a").heartbeat == beat
    assert s.skip_stage("a") == "skipped"
    assert s.attempts("a")[0]["status"] == "failed"
    assert s.reset_stage("a") and s.stage("a").status == "pending"
    with pytest.raises(StoreError, match="no transition"):
        from engine.store.stages import _move

        with s._tx() as c:
            _move(c, "a", "start", "pending", 1, "succeeded")


def test_process_identity(tmp_path):
    me = os.getpid()
    assert same_process(me, process_started(me)) is True
    assert same_process(me, process_started(me) - 3600) is False  # the pid, but not the process that started then
    assert same_process(me, None) is None
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    started = process_started(proc.pid)
    proc.wait()
    assert same_process(proc.pid, started) is False
    assert ask_to_stop(me, process_started(me) - 3600) is False
    assert kill_tree(me, None) is False


def test_a_reused_pid_with_a_fresh_heartbeat_is_still_crashed(tmp_path):
    """Recorded identity decides at once: the pid runs, but it started at another time (pid reuse)."""
    s = _store(tmp_path)
    s.start_attempt("a", os.getpid(), process_started(os.getpid()) - 3600)
    reader = RunStore(tmp_path / "run.db", readonly=True)
    try:
        rows = liveness.notice_crashes(reader)
    finally:
        reader.close()
    row = next(r for r in rows if r.name == "a")
    assert row.status == "crashed" and "gone without a final status" in row.reason
    assert s.attempts("a")[0]["status"] == "crashed"


def test_identity_unknown_falls_back_to_the_heartbeat_age(tmp_path):
    s = _store(tmp_path)
    s.start_attempt("a", os.getpid())  # no start time recorded: a run from an older aba
    row = s.stage("a")
    assert liveness.worker_alive(row, now=row.heartbeat + 1)
    assert not liveness.worker_alive(row, now=row.heartbeat + liveness.STALE_HEARTBEAT_S + 1)


def test_a_reader_of_an_older_run_gets_it_migrated_by_a_writer(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(MIGRATIONS[0])
        conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        conn.execute("INSERT INTO stages (name, position, selected, status, pid) VALUES ('a', 0, 1, 'running', 1)")
    reader = RunStore(path, readonly=True)
    try:
        assert reader.schema_version() == SCHEMA_VERSION
        assert reader.stages()[0].pid_started is None
    finally:
        reader.close()


def test_the_panel_poller_marks_a_crash_through_the_named_path(tmp_path):
    from engine.runner.follow import Follower as Poller  # the reader the panel polls with

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    s = _store(run_dir)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    started = process_started(proc.pid)
    proc.wait()
    s.start_attempt("a", proc.pid, started)
    poller = Poller(run_dir)
    try:
        assert poller.store.readonly
        poller.poll()
    finally:
        poller.close()
    assert s.stage("a").status == "crashed"


def _worker(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "engine.runner.worker", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=60)


def test_a_worker_never_counts_an_attempt_itself(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _store(run_dir).close()
    assert _worker("a", str(run_dir)).returncode == 2  # by hand, without the driver's attempt number
    stood_down = _worker("a", str(run_dir), "--attempt", "1")  # its driver died before recording the attempt
    assert stood_down.returncode == 4 and "not this process's to run" in stood_down.stdout
    with RunStore(run_dir / "run.db") as s:
        assert s.stage("a").attempts == 0 and s.attempts() == []
