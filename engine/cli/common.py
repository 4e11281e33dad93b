"""What every `aba` command shares: the console, time format, opening a run, the demo config path."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from engine.runner import supervisor as sup
from engine.store import RunStore

ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = ROOT / "data" / "configs" / "demo.toml"


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else ""


def open_run(args: argparse.Namespace, readonly: bool = False) -> tuple[Path, RunStore]:
    run_dir = sup.resolve_run(getattr(args, "run_id", None), sup.runs_dir(args.runs_dir))
    return run_dir, RunStore(run_dir / "run.db", readonly=readonly)
