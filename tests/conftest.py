"""Shared fixtures: every test gets its own runs folder; the user's own runs and config stay out."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "data" / "configs" / "demo.toml"
sys.path.insert(0, str(ROOT))


@pytest.fixture(autouse=True)
def _isolated_runs(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.setenv("ABA_RUNS_DIR", str(runs))
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
