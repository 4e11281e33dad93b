"""The run and its stages: the stage state machine, attempts, heartbeats, cancel requests, progress."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from engine.store.db import StoreError


class StageStatus(StrEnum):
    """A stage's state in the `stages` table (the strings are the stored values: the schema is unchanged)."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CRASHED = "crashed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


class AttemptDecision(StrEnum):
    """What a worker does with the attempt it was started for (`accept_attempt`)."""

    RUN = "run"  # it is this process's running attempt: go
    CANCEL = "cancel"  # it is, but a cancel was requested before it began: end it as cancelled
    GONE = "gone"  # it is not (ended, reset or taken by another process meanwhile): exit without touching it


STATUSES = tuple(StageStatus)
FINAL = frozenset(StageStatus) - {StageStatus.PENDING, StageStatus.RUNNING}


@dataclass(frozen=True)
class Transition:
    sources: frozenset[str]
    targets: frozenset[str]
    who: str


def _t(sources: Iterable[str], targets: Iterable[str], who: str) -> Transition:
    return Transition(frozenset(sources), frozenset(targets), who)


# The stage state machine, written down once. Every change of `stages.status` goes through `_move`, one guarded
# UPDATE (`WHERE status = ? AND attempts = ?`): of two actors racing for the same row, exactly one wins.
TRANSITIONS: dict[str, Transition] = {
    "start": _t({StageStatus.PENDING}, {StageStatus.RUNNING}, "the driver, when no cancel is pending; the only place attempts grow"),
    "end": _t({StageStatus.RUNNING}, {StageStatus.SUCCEEDED, StageStatus.FAILED, StageStatus.CANCELLED}, "the attempt's worker"),
    "crash": _t({StageStatus.RUNNING}, {StageStatus.CRASHED}, "whoever notices the attempt's process gone (driver, CLI, panel)"),
    "kill": _t({StageStatus.RUNNING}, {StageStatus.CANCELLED}, "cancel, when the grace period is over (before it kills)"),
    "cancel": _t({StageStatus.PENDING}, {StageStatus.CANCELLED}, "cancel of a stage that has not started (no attempt is touched)"),
    "skip": _t({StageStatus.PENDING, StageStatus.FAILED, StageStatus.CRASHED, StageStatus.CANCELLED}, {StageStatus.SKIPPED}, "the user (no attempt is touched)"),
    "reset": _t({StageStatus.PENDING, *FINAL}, {StageStatus.PENDING}, "resume / start again: clears the cancel request"),
}


@dataclass(frozen=True)
class StageRow:
    name: str
    position: int
    selected: bool
    status: str
    attempts: int
    pid: int | None
    started: float | None
    ended: float | None
    reason: str | None
    exit_code: int | None
    cancel_requested: bool
    progress: float | None
    progress_total: float | None
    progress_label: str | None
    heartbeat: float | None
    pid_started: float | None = None  # the worker's process start time: pid + this = the attempt's process

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class StartOutcome:
    """What the driver found when it went to start a stage: `attempt` is set when it started one."""

    status: str
    attempt: int | None = None


_ROW_SQL = (
    "SELECT s.name, s.position, s.selected, s.status, s.attempts, s.pid, s.started, s.ended, s.reason,"
    " s.exit_code, s.cancel_requested, s.progress, s.progress_total, s.progress_label, h.time, s.pid_started"
    " FROM stages s LEFT JOIN heartbeats h ON h.stage = s.name"
)


def _row(r: Sequence[Any]) -> StageRow:
    return StageRow(r[0], r[1], bool(r[2]), r[3], r[4], r[5], r[6], r[7], r[8], r[9], bool(r[10]), r[11], r[12], r[13],
                    r[14], r[15])


def _move(c, stage: str, event: str, status: str, attempt: int, to: str, sets: dict[str, Any] | None = None,
          bump: bool = False) -> bool:
    """The one way a stage changes status: valid per TRANSITIONS, and only if nobody moved the row first."""
    rule = TRANSITIONS[event]
    if status not in rule.sources or to not in rule.targets:
        raise StoreError(f"stage {stage}: no transition {status} -> {to} by {event}")
    sets = sets or {}
    assign = "".join(f", {k} = ?" for k in sets) + (", attempts = attempts + 1" if bump else "")
    cur = c.execute(
        f"UPDATE stages SET status = ?{assign} WHERE name = ? AND status = ? AND attempts = ?",
        (to, *sets.values(), stage, status, attempt),
    )
    return cur.rowcount == 1


class StagesMixin:
    """Mixed into RunStore: needs `_tx`, `_q` and `path` from Database."""

    # -- run and stages ---------------------------------------------------------------------

    def init_run(self, run_id: str, name: str, config_source: str, stages: Sequence[str], selected: Iterable[str]) -> None:
        chosen = set(selected)
        with self._tx() as c:
            c.execute(
                "INSERT OR IGNORE INTO run (id, name, created, config_source) VALUES (?, ?, ?, ?)",
                (run_id, name, time.time(), config_source),
            )
            for pos, stage in enumerate(stages):
                c.execute(
                    "INSERT OR IGNORE INTO stages (name, position, selected) VALUES (?, ?, ?)",
                    (stage, pos, int(stage in chosen)),
                )

    def run_info(self) -> dict[str, Any]:
        row = self._q("SELECT id, name, created, config_source, driver_pid, driver_started FROM run")
        if not row:
            return {}
        r = row[0]
        return {"id": r[0], "name": r[1], "created": r[2], "config_source": r[3], "driver_pid": r[4],
                "driver_started": r[5]}

    def claim_driver(self, alive: Callable[[int, float | None], bool], spawn: Callable[[], tuple[int, float | None]],
                     me: int | None = None) -> int | None:
        """Record the process `spawn()` starts as the run's driver, unless the recorded one is `alive`.

        Checked and recorded in one write transaction, so two launches cannot both start a driver. Returns the new
        driver's pid, or None (nothing spawned) when another live driver is recorded. A driver started by `launch`
        finds itself (`me`) recorded already and keeps the claim."""
        with self._tx() as c:
            pid, started = c.execute("SELECT driver_pid, driver_started FROM run").fetchone()
            if me is not None and pid == me:
                return me
            if pid is not None and alive(pid, started):
                return None
            new_pid, new_started = spawn()
            c.execute("UPDATE run SET driver_pid = ?, driver_started = ?", (new_pid, new_started))
            return new_pid

    def release_driver(self, pid: int) -> None:
        with self._tx() as c:
            c.execute("UPDATE run SET driver_pid = NULL, driver_started = NULL WHERE driver_pid = ?", (pid,))

    def select_stages(self, names: Iterable[str]) -> None:
        """Mark these stages as part of the run (others keep their flag)."""
        with self._tx() as c:
            c.executemany("UPDATE stages SET selected = 1 WHERE name = ?", [(n,) for n in names])

    def stages(self) -> list[StageRow]:
        return [_row(r) for r in self._q(_ROW_SQL + " ORDER BY s.position")]

    def stage(self, name: str) -> StageRow:
        rows = self._q(_ROW_SQL + " WHERE s.name = ?", (name,))
        if not rows:
            raise StoreError(f"{self.path}: no stage named {name!r}")
        return _row(rows[0])

    # -- transitions ------------------------------------------------------------------------

    def begin_attempt(self, stage: str, spawn: Callable[[int], tuple[int, float | None]]) -> StartOutcome:
        """Start attempt n+1 of a pending stage: `spawn(n)` starts its process and returns (pid, start time).

        The check, the spawn and the record are one write transaction: a skip or cancel lands wholly before (the
        stage is not started; a pending cancel moves it to cancelled) or wholly after (it sees a running attempt).
        A driver killed inside it leaves the stage pending, and the worker it spawned finds no attempt of its own."""
        with self._tx() as c:
            row = c.execute("SELECT status, attempts, cancel_requested FROM stages WHERE name = ?", (stage,)).fetchone()
            if row is None:
                raise StoreError(f"{self.path}: no stage named {stage!r}")
            status, n, cancel = row
            if status != StageStatus.PENDING:
                return StartOutcome(status)
            now = time.time()
            if cancel:
                _move(c, stage, "cancel", status, n, StageStatus.CANCELLED, {"ended": now, "reason": "cancelled before it started"})
                return StartOutcome(StageStatus.CANCELLED)
            pid, pid_started = spawn(n + 1)
            moved = _move(c, stage, "start", status, n, StageStatus.RUNNING, {
                "pid": pid, "pid_started": pid_started, "started": now, "ended": None, "reason": None, "exit_code": None,
                "progress": None, "progress_total": None, "progress_label": None,
            }, bump=True)
            assert moved, "the row cannot change inside this transaction"
            c.execute(
                "INSERT INTO attempts (stage, n, pid, pid_started, started, status) VALUES (?, ?, ?, ?, ?, 'running')",
                (stage, n + 1, pid, pid_started, now),
            )
            c.execute("INSERT OR REPLACE INTO heartbeats (stage, pid, time) VALUES (?, ?, ?)", (stage, pid, now))
            return StartOutcome(StageStatus.RUNNING, n + 1)

    def start_attempt(self, stage: str, pid: int, pid_started: float | None = None) -> int | None:
        """`begin_attempt` for a process that already runs (tools, benches). The attempt number, or None."""
        return self.begin_attempt(stage, lambda n: (pid, pid_started)).attempt

    def accept_attempt(self, stage: str, attempt: int, pid: int) -> AttemptDecision:
        """The worker's first act: RUN when attempt `attempt` is running under this pid, CANCEL when a cancel is
        already waiting for it, GONE when it is not this process's to run (it ended, or never started)."""
        with self._tx() as c:
            row = c.execute("SELECT status, attempts, pid, cancel_requested FROM stages WHERE name = ?", (stage,)).fetchone()
            if row is None or tuple(row[:3]) != (StageStatus.RUNNING, attempt, pid):
                return AttemptDecision.GONE
            c.execute("INSERT OR REPLACE INTO heartbeats (stage, pid, time) VALUES (?, ?, ?)", (stage, pid, time.time()))
            return AttemptDecision.CANCEL if row[3] else AttemptDecision.RUN

    def end_attempt(self, stage: str, attempt: int, status: str, reason: str | None = None,
                    exit_code: int | None = None, event: str | None = None) -> bool:
        """Attempt `attempt` of a running stage ends with `status`; False (and nothing written) when it already ended.

        The worker (succeeded/failed/cancelled), the crash noticer (crashed) and cancel's kill (cancelled) all come
        here; the guard makes the first of them the only one."""
        event = event or ("crash" if status == StageStatus.CRASHED else "end")
        with self._tx() as c:
            now = time.time()  # read under the write lock: no heartbeat of this attempt can be newer
            if not _move(c, stage, event, StageStatus.RUNNING, attempt, status,
                         {"ended": now, "reason": reason, "exit_code": exit_code}):
                return False
            c.execute(
                "UPDATE attempts SET status = ?, ended = ?, reason = ?, exit_code = ? WHERE stage = ? AND n = ?",
                (status, now, reason, exit_code, stage, attempt),
            )
        return True

    def request_cancel(self, stage: str) -> StageRow | None:
        """Ask a stage to stop. A pending one is cancelled at once (no attempt touched); a running attempt keeps the
        request until it has seen it (its worker at start-up or heartbeat, or the driver when it exits). Returns the
        stage as it is after the request, or None when it had already ended."""
        with self._tx() as c:
            status, n = c.execute("SELECT status, attempts FROM stages WHERE name = ?", (stage,)).fetchone()
            if status not in (StageStatus.PENDING, StageStatus.RUNNING):
                return None
            c.execute("UPDATE stages SET cancel_requested = 1 WHERE name = ? AND status = ? AND attempts = ?",
                      (stage, status, n))
            if status == StageStatus.PENDING:
                _move(c, stage, "cancel", status, n, StageStatus.CANCELLED,
                      {"ended": time.time(), "reason": "cancelled before it started"})
        return self.stage(stage)

    def skip_stage(self, stage: str) -> str:
        """Skip a stage that is not running; returns its status afterwards ('skipped', or what stopped the skip)."""
        with self._tx() as c:
            status, n = c.execute("SELECT status, attempts FROM stages WHERE name = ?", (stage,)).fetchone()
            if status not in TRANSITIONS["skip"].sources:
                return status
            _move(c, stage, "skip", status, n, StageStatus.SKIPPED, {"ended": time.time(), "reason": "skipped by the user"})
            return StageStatus.SKIPPED

    def reset_stage(self, stage: str) -> bool:
        """Back to pending (resume, start again), selected, its cancel request cleared. False while it runs."""
        with self._tx() as c:
            status, n = c.execute("SELECT status, attempts FROM stages WHERE name = ?", (stage,)).fetchone()
            if status not in TRANSITIONS["reset"].sources:
                return False
            return _move(c, stage, "reset", status, n, StageStatus.PENDING, {"reason": None, "cancel_requested": 0, "selected": 1})

    def heartbeat(self, stage: str, pid: int) -> bool:
        """Write a heartbeat for the running attempt of this pid. True means stop: a cancel was asked for, or the
        attempt is no longer this process's (it was ended by someone else): then no heartbeat is written."""
        with self._tx() as c:
            row = c.execute("SELECT status, pid, cancel_requested FROM stages WHERE name = ?", (stage,)).fetchone()
            if row is None or row[0] != StageStatus.RUNNING or row[1] != pid:
                return True
            c.execute("INSERT OR REPLACE INTO heartbeats (stage, pid, time) VALUES (?, ?, ?)", (stage, pid, time.time()))
        return bool(row[2])

    def cancel_requested(self, stage: str) -> bool:
        row = self._q("SELECT cancel_requested FROM stages WHERE name = ?", (stage,))
        return bool(row and row[0][0])

    def set_progress(self, stage: str, done: float, total: float | None, label: str | None = None) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE stages SET progress = ?, progress_total = ?, progress_label = ? WHERE name = ?",
                (done, total, label, stage),
            )

    def attempts(self, stage: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT stage, n, pid, started, ended, status, reason, exit_code, pid_started FROM attempts"
        rows = self._q(sql + (" WHERE stage = ? ORDER BY id" if stage else " ORDER BY id"), (stage,) if stage else ())
        keys = ("stage", "n", "pid", "started", "ended", "status", "reason", "exit_code", "pid_started")
        return [dict(zip(keys, r)) for r in rows]
