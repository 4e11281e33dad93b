"""Stage workers forked from the run's fork server (engine.runner.procs.spawn_worker): they start with the training
libraries imported, yet are what a fresh detached process is (own session, log as stdout and stderr, no stdin, the
environment and directory asked for, the exit code or the signal that ended it). Real processes, real forkserver."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest

from engine.registry import loads_models
from engine.runner import procs
from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork server is Linux-only")


def _facts(log):
    line = next(ln for ln in log.read_text().splitlines() if ln.startswith("{"))
    return json.loads(line)


def _spawn(tmp_path, monkeypatch, code: int, sleep_s: float = 0.0):
    env = dict(os.environ, PROBE_ENV="asked for", PYTHONPATH=str(ROOT))
    log = tmp_path / "worker.log"
    return procs.spawn_worker("tests.zygote_probe", [str(code), str(sleep_s)], log, env, tmp_path), log


def test_a_forked_worker_starts_with_torch_and_is_a_detached_process(tmp_path, monkeypatch):
    t0 = time.monotonic()
    worker, log = _spawn(tmp_path, monkeypatch, 3)
    assert worker.wait() == 3
    facts = _facts(log)
    assert facts["torch_loaded"]  # imported once by the fork server, not by the worker
    assert facts["sid"] == facts["pid"] == worker.pid  # its own session: closing the panel or driver never stops it
    assert facts["ppid"] != os.getpid()  # a child of the fork server
    assert facts["cwd"] == str(tmp_path) and facts["probe_env"] == "asked for" and facts["stdin"] == ""
    assert "to stderr" in log.read_text()
    # The next worker forks from the warm server: no import at all.
    (tmp_path / "b").mkdir()
    t1 = time.monotonic()
    again, log2 = _spawn(tmp_path / "b", monkeypatch, 0)
    assert again.wait() == 0 and _facts(log2)["torch_loaded"]
    assert time.monotonic() - t1 < max((t1 - t0) / 2, 1.0)


def test_a_failing_or_killed_forked_worker_reports_as_a_process_does(tmp_path, monkeypatch):
    worker, log = _spawn(tmp_path, monkeypatch, -1)
    assert worker.wait() == 1 and "RuntimeError: probe failed on purpose" in log.read_text()
    (tmp_path / "k").mkdir()
    worker, log = _spawn(tmp_path / "k", monkeypatch, 0, sleep_s=60)
    deadline = time.monotonic() + 60
    while not log.exists() or "{" not in log.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert procs.pid_alive(worker.pid) and worker.poll() is None
    os.kill(worker.pid, signal.SIGKILL)
    assert worker.wait() == -signal.SIGKILL


def test_without_the_zygote_a_worker_is_a_fresh_interpreter(tmp_path, monkeypatch):
    monkeypatch.setenv("ABA_ZYGOTE", "0")
    worker, log = _spawn(tmp_path, monkeypatch, 0)
    assert worker.wait() == 0
    facts = _facts(log)
    assert not facts["torch_loaded"] and facts["sid"] == facts["pid"]


def test_only_stages_that_load_models_are_forked(monkeypatch):
    assert loads_models("sft") and loads_models("grpo") and loads_models("eval")
    assert not loads_models("datagen") and not loads_models("judge")
    monkeypatch.setenv("ABA_STAGE_MODULES", "smoke=tests.stages.busy")
    assert not loads_models("smoke")  # pointed at a stand-in module: not known to load models, a fresh process


def test_the_fork_server_imports_nothing_that_reads_the_environment_on_import():
    import subprocess

    code = ("import sys, engine.runner.zygote; print(sorted(m for m in ('trackio', 'wandb', 'unsloth', "
            "'torch.utils.tensorboard', 'tensorboardX') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
