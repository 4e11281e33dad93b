"""Is a stage's worker, or a run's driver, still there? Process identity plus heartbeat age; crashes noticed once."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import replace
from pathlib import Path

from engine.runner.procs import pid_alive, same_process
from engine.store import RunStore, StageRow, StageStatus, StoreError, write_failure

STALE_HEARTBEAT_S = 30.0  # 15 missed heartbeats (the worker beats every 2 s)


def worker_alive(row: StageRow, now: float | None = None) -> bool:
    """Whether a running stage's worker is still at work.

    Its process identity (pid + start time, recorded when the attempt started) decides when it can be told: a pid
    that is gone, a zombie, or now another process's (pid reuse, a reboot) means the worker is gone. Where the
    identity cannot be told (a run from before start times were recorded, a process the OS will not describe),
    the heartbeat does: older than STALE_HEARTBEAT_S means gone."""
    same = same_process(row.pid, row.pid_started)
    if same is None:
        now = time.time() if now is None else now
        return row.heartbeat is not None and now - row.heartbeat < STALE_HEARTBEAT_S
    return same


def driver_alive(pid: int | None, started: float | None) -> bool:
    """Whether the run's recorded driver still runs (a run from before start times were recorded: its pid alone)."""
    if not pid:
        return False
    same = same_process(pid, started)
    return pid_alive(pid) if same is None else same


def notice_crashes(store: RunStore) -> list[StageRow]:
    """Mark crashed when noticed: the one path the driver, the CLI and the panel use.

    A running stage whose worker is gone is ended as `crashed`, for the attempt that was seen running only (a
    worker that finished meanwhile, or a newer attempt, is left alone). `store` may be read-only: the write then
    goes through a short-lived writer of its own. Returns the stages as they are afterwards."""
    rows = store.stages()
    gone = [r for r in rows if r.status == StageStatus.RUNNING and not worker_alive(r)]
    if not gone:
        return rows
    reasons = {}
    for row in gone:
        # The driver records the exit code itself; arriving here means no one could.
        tail = " | ".join(r.message.splitlines()[0] for r in store.last_logs(row.name, 3) if r.message)
        tail = tail or log_tail(store.path.parent / row.name / "worker.log", 3)
        reasons[row.name] = f"worker (pid {row.pid}) is gone without a final status; last log: {tail or '(none)'}"
    try:
        writer = RunStore(store.path) if store.readonly else store
        try:
            for row in gone:
                writer.end_attempt(row.name, row.attempts, StageStatus.CRASHED, reasons[row.name])
        finally:
            if writer is not store:
                writer.close()
    except (sqlite3.Error, OSError, StoreError) as err:
        # A full disk or a read-only run: the crash is shown (not stored) and the reader goes on reading.
        why = write_failure(err, store.path)
        return [replace(r, status=StageStatus.CRASHED, reason=f"{reasons[r.name]} (not recorded: {why})")
                if r.name in reasons else r for r in store.stages()]
    return store.stages()


def log_tail(path: Path, n: int = 5) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    lines = [ln.strip() for ln in lines if ln.strip()]
    return " | ".join(lines[-n:])[-600:]
