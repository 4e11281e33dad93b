"""Messages that cross screens: what the poll thread found, and which run is open."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.message import Message

from engine.runner.follow import Delta


@dataclass
class RunDelta(Message):
    """New rows of the open run, read by the poll thread. Never replaced: each carries rows the next lacks."""

    delta: Delta


@dataclass
class RunOpened(Message):
    """The panel now shows this run (None: no run yet)."""

    run_dir: Path | None


@dataclass
class RunProblem(Message):
    """The open run's database cannot be read (damaged, not a run database, unreadable): one line why."""

    run_dir: Path
    reason: str
