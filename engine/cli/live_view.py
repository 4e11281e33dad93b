"""`aba run`/`resume`/`start` without --detach and `aba tail`: a run followed through the panel's own reader."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from engine.cli.common import when
from engine.runner import supervisor as sup
from engine.runner.follow import Delta, Follower
from engine.progress import duration, eta_left, progress_cell
from engine.store import FINAL, StageRow
from engine.text import inert

PROGRESS_EVERY_S = 5.0

def follow(run_dir: Path, only: list[str] | None = None) -> int:
    """Show progress until the run stops. Ctrl-C cancels politely. Exit 0 when every asked stage succeeded."""
    with Follower(run_dir, metrics=False, samples=False) as follower:
        view = _RichView(follower.store) if sys.stdout.isatty() else _PlainView(follower.store)
        wanted: list[str] = list(only or [])
        last: list[StageRow] = []
        try:
            with view:
                for delta in follower.follow():
                    if not wanted:
                        wanted = [s.name for s in delta.stages if s.selected]
                    view.show(delta, wanted)
                    last = delta.stages
        except KeyboardInterrupt:
            print("\ncancelling: the stage saves a checkpoint and stops (resume with `aba resume`)...", file=sys.stderr)
            sup.cancel(run_dir)
            last = sup.notice_crashes(follower.store)
    rows = {r.name: r for r in last}
    bad = [rows[n] for n in wanted if n in rows and rows[n].status != "succeeded"]
    for r in bad:
        print(f"{r.name}: {r.status}" + (f": {inert(r.reason)}" if r.reason else ""), file=sys.stderr)
    return 0 if not bad else 1


def tail(run_dir: Path, stage: str | None, keep_following: bool) -> int:
    """Print the run's log (one stage's with `stage`); with `keep_following`, until the run stops."""
    with Follower(run_dir, metrics=False, samples=False, log_stage=stage) as follower:
        for delta in follower.follow(interval=0.5, once=not keep_following):
            for log in delta.logs:
                print(f"{when(log.time)} [{log.stage}] {log.level}: {inert(log.message)}", flush=True)
    return 0


class _PlainView:
    """One line per stage status change and per log line (first line of each): for pipes and CI logs."""

    def __init__(self, store) -> None:
        self.store = store
        self.seen: dict[str, str] = {}
        self.shown_at = 0.0

    def __enter__(self) -> _PlainView:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def show(self, delta: Delta, wanted: list[str]) -> None:
        for row in delta.stages:
            if row.name in wanted and self.seen.get(row.name) != row.status:
                self.seen[row.name] = row.status
                extra = f" ({inert(row.reason)})" if row.reason and row.status in FINAL else ""
                print(f"stage {row.name}: {row.status}{extra}", flush=True)
            if row.name in wanted and row.status == "running" and row.progress is not None and time.monotonic() >= self.shown_at:
                self.shown_at = time.monotonic() + PROGRESS_EVERY_S  # piped: n/N and the ETA every few seconds
                cell = progress_cell(row.status, row.progress, row.progress_total, eta_left(self.store, row))
                print(f"stage {row.name}: {cell}", flush=True)
        for log in delta.logs:
            first = log.message.splitlines()[0] if log.message else ""
            print(f"  [{log.stage}] {inert(first)}", flush=True)


class _RichView:
    """A live progress bar per stage, its label the stage's progress text or its last log line."""

    def __init__(self, store) -> None:
        self.store = store
        from rich.live import Live
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("{task.fields[stage]:<11}", markup=False),
            TextColumn("{task.fields[status]:<10}", markup=False),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}", markup=False),
        )
        self.live = Live(self.progress, refresh_per_second=4, transient=False)
        self.tasks: dict[str, int] = {}
        self.messages: dict[str, str] = {}

    def __enter__(self) -> _RichView:
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.live.__exit__(*exc)

    def show(self, delta: Delta, wanted: list[str]) -> None:
        progress = self.progress
        for name in wanted:
            if name not in self.tasks:
                self.tasks[name] = progress.add_task("", total=None, stage=name, status="pending", start=False)
        for log in delta.logs:
            self.messages[log.stage] = inert((log.message.splitlines() or [""])[0][:80])
        for row in delta.stages:
            if row.name not in self.tasks:
                continue
            task = self.tasks[row.name]
            if row.status != "pending" and not progress.tasks[task].started:
                progress.start_task(task)
            total = row.progress_total or None
            done = row.progress or 0
            if row.status == "succeeded" and total:
                done = total
            desc = row.progress_label or self.messages.get(row.name, "")
            if row.status in FINAL and row.reason:
                desc = row.reason
            eta = eta_left(self.store, row) if total else None
            if eta is not None:
                desc = f"ETA {duration(eta)}  {desc}"
            progress.update(task, total=total, completed=done, status=row.status, description=inert(desc[:100]))
            if row.status in FINAL:
                progress.stop_task(task)
