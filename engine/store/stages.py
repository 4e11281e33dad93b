"""The run and its stages: attempts, heartbeats, cancel requests, progress."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.store.db import StoreError

STATUSES = ("pending", "running", "succeeded", "failed", "crashed", "cancelled", "skipped")
FINAL = frozenset({"succeeded", "failed", "crashed", "cancelled", "skipped"})


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

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}



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
        row = self._q("SELECT id, name, created, config_source, driver_pid FROM run")
        if not row:
            return {}
        r = row[0]
        return {"id": r[0], "name": r[1], "created": r[2], "config_source": r[3], "driver_pid": r[4]}

    def set_driver_pid(self, pid: int | None) -> None:
        with self._tx() as c:
            c.execute("UPDATE run SET driver_pid = ?", (pid,))

    def select_stages(self, names: Iterable[str]) -> None:
        """Mark these stages as part of the run (others keep their flag)."""
        with self._tx() as c:
            c.executemany("UPDATE stages SET selected = 1 WHERE name = ?", [(n,) for n in names])

    def stages(self) -> list[StageRow]:
        rows = self._q(
            "SELECT s.name, s.position, s.selected, s.status, s.attempts, s.pid, s.started, s.ended, s.reason,"
            " s.exit_code, s.cancel_requested, s.progress, s.progress_total, s.progress_label, h.time"
            " FROM stages s LEFT JOIN heartbeats h ON h.stage = s.name ORDER BY s.position"
        )
        return [
            StageRow(r[0], r[1], bool(r[2]), r[3], r[4], r[5], r[6], r[7], r[8], r[9], bool(r[10]), r[11], r[12], r[13], r[14])
            for r in rows
        ]

    def stage(self, name: str) -> StageRow:
        for row in self.stages():
            if row.name == name:
                return row
        raise StoreError(f"{self.path}: no stage named {name!r}")

    def start_attempt(self, stage: str, pid: int) -> int:
        now = time.time()
        with self._tx() as c:
            c.execute(
                "UPDATE stages SET status = 'running', attempts = attempts + 1, pid = ?, started = ?, ended = NULL,"
                " reason = NULL, exit_code = NULL, cancel_requested = 0, progress = NULL, progress_total = NULL,"
                " progress_label = NULL WHERE name = ?",
                (pid, now, stage),
            )
            n = c.execute("SELECT attempts FROM stages WHERE name = ?", (stage,)).fetchone()[0]
            c.execute(
                "INSERT INTO attempts (stage, n, pid, started, status) VALUES (?, ?, ?, ?, 'running')",
                (stage, n, pid, now),
            )
            c.execute("INSERT OR REPLACE INTO heartbeats (stage, pid, time) VALUES (?, ?, ?)", (stage, pid, now))
            return int(n)

    def finish_stage(
        self, stage: str, status: str, reason: str | None = None, exit_code: int | None = None, *, only_if_running: bool = False
    ) -> bool:
        """Record a final status. With only_if_running, leave a stage that already has one alone."""
        assert status in FINAL, status
        now = time.time()
        with self._tx() as c:
            if only_if_running:
                row = c.execute("SELECT status FROM stages WHERE name = ?", (stage,)).fetchone()
                if not row or row[0] != "running":
                    return False
            c.execute(
                "UPDATE stages SET status = ?, ended = ?, reason = ?, exit_code = ? WHERE name = ?",
                (status, now, reason, exit_code, stage),
            )
            c.execute(
                "UPDATE attempts SET status = ?, ended = ?, reason = ?, exit_code = ?"
                " WHERE id = (SELECT MAX(id) FROM attempts WHERE stage = ?)",
                (status, now, reason, exit_code, stage),
            )
        return True

    def reset_stage(self, stage: str, status: str = "pending") -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE stages SET status = ?, reason = NULL, cancel_requested = 0, selected = 1 WHERE name = ?",
                (status, stage),
            )

    def skip_stage(self, stage: str) -> None:
        self.finish_stage(stage, "skipped", "skipped by the user")

    def heartbeat(self, stage: str, pid: int) -> bool:
        """Write a heartbeat; return True when a cancel has been asked for."""
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO heartbeats (stage, pid, time) VALUES (?, ?, ?)", (stage, pid, time.time()))
            row = c.execute("SELECT cancel_requested FROM stages WHERE name = ?", (stage,)).fetchone()
        return bool(row and row[0])

    def request_cancel(self, stage: str) -> None:
        with self._tx() as c:
            c.execute("UPDATE stages SET cancel_requested = 1 WHERE name = ?", (stage,))

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
        sql = "SELECT stage, n, pid, started, ended, status, reason, exit_code FROM attempts"
        rows = self._q(sql + (" WHERE stage = ? ORDER BY id" if stage else " ORDER BY id"), (stage,) if stage else ())
        keys = ("stage", "n", "pid", "started", "ended", "status", "reason", "exit_code")
        return [dict(zip(keys, r)) for r in rows]
