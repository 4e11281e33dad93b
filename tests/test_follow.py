"""One follow loop: the reader the panel polls with is the one `aba run` and `aba tail` print from."""

from __future__ import annotations

import sys

import pytest

from engine.runner.follow import LOG_CHUNK, Follower
from engine.store import RunStore
from tests.conftest import aba, run_id_of, write_config
from tests.uifixtures import make_fixture_run

CFG = '[run]\nstages = ["smoke"]\n'


def test_follower_reads_a_backlog_in_chunks_and_stops_when_the_run_is_idle(runs_dir):
    run = make_fixture_run(runs_dir, traces=0, with_metrics=False)
    with RunStore(run / "run.db") as s:
        for i in range(2 * LOG_CHUNK + 10):
            s.log("judge", f"line {i}")
    with Follower(run, metrics=False, samples=False, log_stage="judge") as f:
        deltas = list(f.follow(interval=0.01))
    assert [len(d.logs) for d in deltas] == [LOG_CHUNK, LOG_CHUNK, 10]
    assert [d.more for d in deltas] == [True, True, False] and not deltas[-1].active  # no driver, nothing running
    assert deltas[-1].logs[-1].message == f"line {2 * LOG_CHUNK + 9}" and not deltas[0].metrics


@pytest.mark.skipif(sys.platform == "win32", reason="the busy stage's timing is tuned for POSIX")
def test_run_and_tail_print_through_the_follower(tmp_path, runs_dir, busy_env, monkeypatch):
    monkeypatch.setenv("BUSY_STEPS", "40")
    monkeypatch.setenv("BUSY_DELAY", "0.02")
    proc = aba("run", str(write_config(tmp_path, CFG)), timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines.index("stage smoke: running") < lines.index("stage smoke: succeeded")
    assert "  [smoke] busy from step 0" in lines
    run_id = run_id_of(proc)

    with RunStore(runs_dir / run_id / "run.db") as s:
        s.log("smoke", "model said \x1b[2J\x1b]0;owned\x07 here")
    tail = aba("tail", run_id, "--stage", "smoke", timeout=60)  # follows, and returns as the run is over
    assert tail.returncode == 0, tail.stderr
    assert "[smoke] info: busy from step 0" in tail.stdout
    assert "\x1b" not in tail.stdout and "model said ␛[2J␛]0;owned␇ here" in tail.stdout  # engine.text.inert


def test_tail_while_running_waits_for_the_end(tmp_path, runs_dir, busy_env, monkeypatch):
    monkeypatch.setenv("BUSY_STEPS", "60")
    monkeypatch.setenv("BUSY_DELAY", "0.03")
    proc = aba("run", str(write_config(tmp_path, CFG)), "--detach", timeout=60)
    run_id = run_id_of(proc)
    tail = aba("tail", run_id, timeout=120)
    assert tail.returncode == 0, tail.stderr
    with RunStore(runs_dir / run_id / "run.db") as s:
        assert s.stage("smoke").status == "succeeded"  # tail returned only once the run was over
        assert tail.stdout.count("\n") == len(s.logs_since(0))  # and printed every log line once

