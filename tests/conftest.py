"""Shared fixtures: every test gets its own runs folder; the user's own runs and config stay out."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "data" / "configs" / "demo.toml"
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def _model_cache(tmp_path_factory):
    """The tiny demo base is built once per test session, not once per test (ABA_TEST_MODEL_CACHE names a folder
    kept across sessions instead: the build is keyed by seed and fingerprint, so a stale one is never reused)."""
    keep = os.environ.get("ABA_TEST_MODEL_CACHE")
    return Path(keep) if keep else tmp_path_factory.mktemp("aba-cache")


@pytest.fixture(autouse=True)
def _isolated_runs(tmp_path, monkeypatch, _model_cache):
    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.setenv("ABA_RUNS_DIR", str(runs))
    monkeypatch.setenv("ABA_CACHE_DIR", str(_model_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
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
