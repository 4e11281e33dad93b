"""Stage workers forked from a fork server (engine.runner.procs.spawn_worker): the driver's own (multiprocessing's
forkserver) or one many drivers share (engine.runner.forkd, ABA_FORK_SERVER). Either way they start with the
training libraries imported, yet are what a fresh detached process is (own session, log as stdout and stderr, no
stdin, the environment and directory asked for, the exit code or the signal that ended it). Real processes."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest

from engine.registry import loads_models
from engine.runner import procs
from tests.conftest import ROOT, start_fork_server

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork server is Linux-only")


def _facts(log):
    line = next(ln for ln in log.read_text().splitlines() if ln.startswith("{"))
    return json.loads(line)


def _spawn(tmp_path, monkeypatch, code: int, sleep_s: float = 0.0):
    env = dict(os.environ, PROBE_ENV="asked for", PYTHONPATH=str(ROOT))
    log = tmp_path / "worker.log"
    return procs.spawn_worker("tests.zygote_probe", [str(code), str(sleep_s)], log, env, tmp_path), log


SERVERS = ["own", "shared"]  # the driver's own fork server; the test session's shared one (tests/conftest.py)


def _server(kind: str, monkeypatch) -> type:
    if kind == "own":
        monkeypatch.delenv(procs.FORK_SERVER_ENV, raising=False)
        return procs.ForkedWorker
    assert os.environ.get(procs.FORK_SERVER_ENV), "the session's fork server is running"
    return procs.ServedWorker


@pytest.mark.parametrize("server", SERVERS)
def test_a_forked_worker_starts_with_torch_and_is_a_detached_process(tmp_path, monkeypatch, server):
    kind = _server(server, monkeypatch)
    t0 = time.monotonic()
    worker, log = _spawn(tmp_path, monkeypatch, 3)
    assert isinstance(worker, kind)
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


@pytest.mark.parametrize("server", SERVERS)
def test_a_failing_or_killed_forked_worker_reports_as_a_process_does(tmp_path, monkeypatch, server):
    _server(server, monkeypatch)
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


def _wait_for_facts(log, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while not log.exists() or "{" not in log.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return _facts(log)


def _private_server(tmp_path, monkeypatch, unbuffered: bool = True):
    """A shared fork server of this test's own (as a sweep or a test session starts one), named in the env."""
    address = tmp_path / "forkd.sock"
    env = dict(os.environ)
    if not unbuffered:
        env.pop("PYTHONUNBUFFERED", None)
    server = start_fork_server(address, os.getpid(), env)
    monkeypatch.setenv(procs.FORK_SERVER_ENV, str(address))
    return server, address


def test_a_driver_that_dies_leaves_its_served_worker_running_and_the_server_reaps_it(tmp_path, monkeypatch):
    server, _ = _private_server(tmp_path, monkeypatch)
    try:
        worker, log = _spawn(tmp_path, monkeypatch, 0, sleep_s=2)
        facts = _wait_for_facts(log)
        assert isinstance(worker, procs.ServedWorker) and facts["ppid"] == server.pid and facts["sid"] == worker.pid
        worker._sock.close()  # what a driver killed with -9 leaves: the connection closed
        assert procs.pid_alive(worker.pid)  # the worker runs on
        deadline = time.monotonic() + 30
        while procs.pid_alive(worker.pid):  # and ends, reaped by its parent the server (no zombie left)
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # The server still serves the next driver.
        (tmp_path / "b").mkdir()
        again, _ = _spawn(tmp_path / "b", monkeypatch, 4)
        assert again.wait() == 4
    finally:
        server.terminate()
        assert server.wait(timeout=30) == 0


def test_a_server_that_goes_first_leaves_the_exit_code_unknown_and_a_gone_one_is_not_asked(tmp_path, monkeypatch):
    server, address = _private_server(tmp_path, monkeypatch)
    worker, log = _spawn(tmp_path, monkeypatch, 0, sleep_s=1.5)
    _wait_for_facts(log)
    server.kill()
    server.wait()
    assert worker.wait() is None  # the worker ran to its end; its exit code went with its parent
    assert not procs.pid_alive(worker.pid) and "to stderr" in log.read_text()
    assert "exit status unknown" in procs.describe_exit(worker.wait())
    assert address.exists()  # a socket left behind by a killed server: the driver's own server instead
    (tmp_path / "b").mkdir()
    fallback, _ = _spawn(tmp_path / "b", monkeypatch, 5)
    assert isinstance(fallback, procs.ForkedWorker) and fallback.wait() == 5


def test_a_driver_whose_import_time_environment_differs_is_refused_and_starts_its_own_server(tmp_path, monkeypatch):
    """huggingface_hub fixes HF_HUB_OFFLINE when it is imported: a worker forked from a server that imported it
    online would try the network (28 s of retries) although its driver said offline. Such a driver is refused."""
    assert os.environ.get(procs.FORK_SERVER_ENV) and os.environ["HF_HUB_OFFLINE"] == "1"
    log = tmp_path / "worker.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="0")
    worker = procs.spawn_worker("tests.zygote_probe", ["0", "0"], log, env, tmp_path)
    assert isinstance(worker, procs.ForkedWorker) and worker.wait() == 0 and _facts(log)["torch_loaded"]
    same = procs.spawn_worker("tests.zygote_probe", ["0", "0"], tmp_path / "same.log",
                              dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"), tmp_path)
    assert isinstance(same, procs.ServedWorker) and same.wait() == 0  # thread counts the worker sets itself


def test_what_a_forked_worker_printed_is_in_its_log_when_it_is_killed(tmp_path, monkeypatch):
    """Unbuffered as a fresh worker (PYTHONUNBUFFERED), whatever the server started with: an OOM kill or kill -9
    loses no line it printed."""
    server, _ = _private_server(tmp_path, monkeypatch, unbuffered=False)
    try:
        _killed_worker_left_its_lines(tmp_path, monkeypatch)
    finally:
        server.terminate()
        server.wait(timeout=30)


def _killed_worker_left_its_lines(tmp_path, monkeypatch):
    worker, log = _spawn(tmp_path, monkeypatch, 0, sleep_s=60)
    facts = _wait_for_facts(log)
    assert facts["pid"] == worker.pid
    deadline = time.monotonic() + 30
    while "unflushed line" not in log.read_text():  # printed without flush=True just before the sleep
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    os.kill(worker.pid, signal.SIGKILL)
    assert worker.wait() == -signal.SIGKILL
