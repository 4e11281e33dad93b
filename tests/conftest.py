"""Shared fixtures: every test gets its own runs folder; the user's own runs and config stay out."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "data" / "configs" / "demo.toml"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # every test; the session's fork server imports under them
sys.path.insert(0, str(ROOT))
import engine  # noqa: E402,F401  (before any test imports torch: its OpenMP threads wait passively, see engine/__init__.py)


def _shared_dir(tmp_path_factory, name: str) -> Path:
    """A folder every process of this test session sees: under pytest-xdist the workers' base temp folders share a
    parent; without xdist, this session's own."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def _model_cache(tmp_path_factory):
    """The tiny demo base is built once per test session, not once per test or per xdist worker
    (ABA_TEST_MODEL_CACHE names a folder kept across sessions instead: the build is keyed by seed and fingerprint,
    so a stale one is never reused). Under xdist the first worker builds the demo's base while the others wait on
    a file lock, instead of every worker building it at the same time."""
    keep = os.environ.get("ABA_TEST_MODEL_CACHE")
    cache = Path(keep) if keep else _shared_dir(tmp_path_factory, "aba-cache")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        from filelock import FileLock

        from engine import config
        from engine.models import loading as models

        seed = config.load(DEMO).run.seed
        with FileLock(str(cache) + ".lock"), pytest.MonkeyPatch.context() as mp:
            mp.setenv("ABA_CACHE_DIR", str(cache))
            models.materialize_demo_base("demo:tiny-qwen3", seed, tmp_path_factory.mktemp("prebuild") / "run" / "base")
    return cache


@pytest.fixture(scope="session")
def demo_judged_run(tmp_path_factory, _model_cache):
    """`aba demo --stages datagen,judge`, run once per test session (once across xdist workers, under a file lock):
    (the CLI's CompletedProcess, the finished run folder). Tests that only read it use `copy_run` (or read it
    readonly); a test that changes it works on its own copy."""
    import json
    import subprocess

    from filelock import FileLock

    root = _shared_dir(tmp_path_factory, "demo-judged")
    with FileLock(str(root) + ".lock"):
        done = root / "done.json"
        if not done.exists():
            proc = aba("demo", "--stages", "datagen,judge", env={"ABA_RUNS_DIR": str(root / "runs"),
                       "ABA_CACHE_DIR": str(_model_cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
            done.write_text(json.dumps({"args": proc.args, "returncode": proc.returncode, "stdout": proc.stdout,
                                        "stderr": proc.stderr}))
        info = json.loads(done.read_text())
    proc = subprocess.CompletedProcess(info["args"], info["returncode"], info["stdout"], info["stderr"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    from engine.runner import supervisor as sup

    return proc, sup.resolve_run(run_id_of(proc), root / "runs")


def copy_run(run_dir: Path, runs: Path) -> Path:
    """A finished run copied into a test's own runs folder (its database, WAL and all), same id."""
    import shutil

    return Path(shutil.copytree(run_dir, runs / run_dir.name))


def fork_server_listening(address: Path) -> bool:
    import socket

    with socket.socket(socket.AF_UNIX) as probe:
        return probe.connect_ex(str(address)) == 0


def start_fork_server(address: Path, owner: int, env: dict[str, str], **popen):
    """`python -m engine.runner.forkd ADDRESS --owner OWNER`, returned once it listens (the socket file appears at
    bind, a moment before; a driver that asks while it imports waits its turn)."""
    import subprocess
    import time

    server = subprocess.Popen([sys.executable, "-m", "engine.runner.forkd", str(address), "--owner", str(owner)],
                              cwd=ROOT, env=dict(env, PYTHONPATH=str(ROOT)), **popen)
    deadline = time.monotonic() + 60
    while not fork_server_listening(address):
        assert time.monotonic() < deadline and server.poll() is None, f"the fork server exited: {server.returncode}"
        time.sleep(0.02)
    return server


@pytest.fixture(scope="session")
def _fork_server(tmp_path_factory) -> str | None:
    """One fork server for the whole test session (engine.runner.forkd, shared by the xdist workers under a file
    lock): the stage workers of every test's runs fork from it, so torch, transformers, PEFT and TRL are imported
    once per session instead of once per run (about 5 CPU-seconds each; `make test` starts some 50 runs). It exits
    when the session's pytest does. tests/test_zygote.py tests a driver's own fork server as well."""
    import subprocess

    from filelock import FileLock

    from engine.runner import procs

    if not procs.zygote_enabled():
        return None
    owner = os.getppid() if os.environ.get("PYTEST_XDIST_WORKER") else os.getpid()  # xdist: the controller
    address = _shared_dir(tmp_path_factory, "forkd") / "forkd.sock"  # in pytest's own folder (the user's alone)
    with FileLock(str(address) + ".lock"):
        if not fork_server_listening(address):
            with open(address.with_name("forkd.log"), "ab") as out:  # its own session: a ctrl+c is for pytest
                start_fork_server(address, owner, dict(os.environ, **OFFLINE), stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    return str(address)


@pytest.fixture(autouse=True)
def _isolated_runs(tmp_path, monkeypatch, _model_cache, _fork_server):
    runs = tmp_path / "runs"
    runs.mkdir()
    if _fork_server:
        monkeypatch.setenv("ABA_FORK_SERVER", _fork_server)
    else:
        monkeypatch.delenv("ABA_FORK_SERVER", raising=False)
    monkeypatch.setenv("ABA_RUNS_DIR", str(runs))
    monkeypatch.setenv("ABA_CACHE_DIR", str(_model_cache))
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("ABA_FAULT", raising=False)
    yield runs


@pytest.fixture
def runs_dir(_isolated_runs):
    return _isolated_runs


@pytest.fixture
def busy_env(monkeypatch):
    """Route the `smoke` stage name to the test-only busy stage."""
    monkeypatch.setenv("ABA_STAGE_MODULES", "smoke=tests.stages.busy")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def write_config(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def demo_variant(tmp_path: Path, **overrides) -> Path:
    """The demo config with some fields changed: demo_variant(tmp, grpo__max_steps=6) sets grpo.max_steps."""
    from engine import config

    cfg = config.load(DEMO)
    for key, value in overrides.items():
        obj = cfg
        *parents, last = key.split("__")
        for part in parents:
            obj = getattr(obj, part)
        setattr(obj, last, value)
    path = tmp_path / "variant.toml"
    config.save(cfg, path)
    config.load(path)  # still valid
    return path


def aba(*args: str, env: dict | None = None, timeout: float = 600):
    import subprocess

    full = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=full, timeout=timeout)


def run_id_of(proc) -> str:
    first = proc.stdout.splitlines()[0]
    assert first.startswith("run "), proc.stdout + proc.stderr
    return first.split()[1]
