"""What stages report: metrics, logs, events, artifacts, samples and structured results."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.store.db import clean_number as _clean

@dataclass(frozen=True)
class MetricRow:
    id: int
    stage: str
    step: int
    key: str
    value: float | None
    time: float
    attempt: int = 0  # the stage's attempt that wrote it


@dataclass(frozen=True)
class LogRow:
    id: int
    stage: str
    time: float
    level: str
    message: str


@dataclass(frozen=True)
class EventRow:
    id: int
    stage: str
    time: float
    kind: str
    message: str
    data: dict


def attempt_of(c: sqlite3.Connection, stage: str) -> int:
    """The stage's current attempt (0 for a name that is not a stage of the run: tools, imports, benches)."""
    row = c.execute("SELECT attempts FROM stages WHERE name = ?", (stage,)).fetchone()
    return int(row[0]) if row else 0


def _insert_metrics(c: sqlite3.Connection, rows: list[tuple[str, int, str, float | None, float]]) -> None:
    """Insert rows tagged with their stage's attempt. Exactly once per attempt: a row of attempt n at step s voids
    the rows of the same stage and key that earlier attempts wrote at step s or later (a resumed stage redoes the
    steps after its checkpoint), in the same transaction, so no reader ever sees a step twice across attempts."""
    attempts: dict[str, int] = {}
    first: dict[tuple[str, str], int] = {}
    for stage, step, key, _, _ in rows:
        if stage not in attempts:
            attempts[stage] = attempt_of(c, stage)
        first[(stage, key)] = min(step, first.get((stage, key), step))
    # Insert first, then delete: a new row's id is then above every id deleted, so ids keep growing (rowids of
    # deleted rows at the top would be reused otherwise, and a follower reading "ids above the last seen" would
    # miss the new rows).
    c.executemany("INSERT INTO metrics (stage, step, key, value, time, attempt) VALUES (?, ?, ?, ?, ?, ?)",
                  [(*r, attempts[r[0]]) for r in rows])
    for (stage, key), step in first.items():
        if attempts[stage]:
            c.execute("DELETE FROM metrics WHERE stage = ? AND key = ? AND step >= ? AND attempt < ?",
                      (stage, key, step, attempts[stage]))


class TelemetryMixin:
    """Mixed into RunStore: needs `_tx`, `_q` and `path` from Database."""

    # -- metrics ----------------------------------------------------------------------------

    def add_metrics(self, stage: str, step: int, values: dict[str, float | None], when: float | None = None) -> None:
        when = time.time() if when is None else when
        rows = [(stage, int(step), k, _clean(v), when) for k, v in values.items()]
        with self._tx() as c:
            _insert_metrics(c, rows)

    def add_metric_rows(self, rows: Iterable[tuple[str, int, str, float | None, float]]) -> None:
        """Bulk insert of (stage, step, key, value, time) rows in one transaction."""
        with self._tx() as c:
            _insert_metrics(c, [(s, int(st), k, _clean(v), t) for s, st, k, v, t in rows])

    def metrics_since(self, after_id: int = 0, stage: str | None = None, limit: int = 100_000) -> list[MetricRow]:
        """Rows newer than `after_id`, oldest first."""
        if stage is None:
            rows = self._q(
                "SELECT id, stage, step, key, value, time, attempt FROM metrics WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            )
        else:
            rows = self._q(
                "SELECT id, stage, step, key, value, time, attempt FROM metrics WHERE id > ? AND stage = ?"
                " ORDER BY id LIMIT ?",
                (after_id, stage, limit),
            )
        return [MetricRow(*r) for r in rows]

    def metric_series(self, stage: str, key: str, after_id: int = 0) -> tuple[list[int], list[int], list[float | None]]:
        """(ids, steps, values) of one key, using the (stage, key, id) index."""
        rows = self._q(
            "SELECT id, step, value FROM metrics WHERE stage = ? AND key = ? AND id > ? ORDER BY id", (stage, key, after_id)
        )
        return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]

    def metric_keys(self) -> list[tuple[str, str]]:
        """Every (stage, key) that has at least one row, sorted: what a chart of this run can show."""
        return [(r[0], r[1]) for r in self._q("SELECT DISTINCT stage, key FROM metrics ORDER BY stage, key")]

    def last_metric_id(self) -> int:
        return int(self._q("SELECT COALESCE(MAX(id), 0) FROM metrics")[0][0])

    def latest_metric(self, stage: str, key: str) -> float | None:
        rows = self._q(
            "SELECT value FROM metrics WHERE stage = ? AND key = ? ORDER BY id DESC LIMIT 1", (stage, key)
        )
        return rows[0][0] if rows else None

    # -- logs, events, artifacts, samples ---------------------------------------------------

    def log(self, stage: str, message: str, level: str = "info") -> None:
        with self._tx() as c:
            c.execute("INSERT INTO logs (stage, time, level, message) VALUES (?, ?, ?, ?)", (stage, time.time(), level, message))

    def logs_since(self, after_id: int = 0, stage: str | None = None, limit: int = 10_000) -> list[LogRow]:
        if stage is None:
            rows = self._q("SELECT id, stage, time, level, message FROM logs WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit))
        else:
            rows = self._q(
                "SELECT id, stage, time, level, message FROM logs WHERE id > ? AND stage = ? ORDER BY id LIMIT ?",
                (after_id, stage, limit),
            )
        return [LogRow(*r) for r in rows]

    def last_logs(self, stage: str, n: int = 10) -> list[LogRow]:
        rows = self._q(
            "SELECT id, stage, time, level, message FROM logs WHERE stage = ? ORDER BY id DESC LIMIT ?", (stage, n)
        )
        return [LogRow(*r) for r in reversed(rows)]

    def event(self, stage: str, kind: str, message: str, data: dict | None = None) -> None:
        """An event; the same event (stage, kind, message) from an earlier attempt is replaced by this one."""
        with self._tx() as c:
            n = attempt_of(c, stage)
            c.execute(  # inserted before the delete: ids keep growing (see _insert_metrics)
                "INSERT INTO events (stage, time, kind, message, data, attempt) VALUES (?, ?, ?, ?, ?, ?)",
                (stage, time.time(), kind, message, json.dumps(data or {}), n),
            )
            if n:
                c.execute("DELETE FROM events WHERE stage = ? AND kind = ? AND message = ? AND attempt < ?",
                          (stage, kind, message, n))

    def events(self, stage: str | None = None, kind: str | None = None, after_id: int = 0) -> list[EventRow]:
        sql, args = "SELECT id, stage, time, kind, message, data FROM events WHERE id > ?", [after_id]
        if stage:
            sql, args = sql + " AND stage = ?", [*args, stage]
        if kind:
            sql, args = sql + " AND kind = ?", [*args, kind]
        return [EventRow(r[0], r[1], r[2], r[3], r[4], json.loads(r[5] or "{}")) for r in self._q(sql + " ORDER BY id", args)]

    def add_artifact(self, stage: str, kind: str, path: str | Path, meta: dict | None = None) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO artifacts (stage, kind, path, meta, time) VALUES (?, ?, ?, ?, ?)",
                (stage, kind, str(path), json.dumps(meta or {}), time.time()),
            )

    def artifacts(self, stage: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT stage, kind, path, meta, time FROM artifacts WHERE 1=1", []
        if stage:
            sql, args = sql + " AND stage = ?", [*args, stage]
        if kind:
            sql, args = sql + " AND kind = ?", [*args, kind]
        rows = self._q(sql + " ORDER BY id", args)
        return [{"stage": r[0], "kind": r[1], "path": r[2], "meta": json.loads(r[3] or "{}"), "time": r[4]} for r in rows]

    def add_sample(self, stage: str, step: int, prompt: str, completion: str, scores: dict, reward: float | None) -> None:
        """A sample; an earlier attempt's samples of this step or later are replaced (see _insert_metrics)."""
        with self._tx() as c:
            n = attempt_of(c, stage)
            c.execute(  # inserted before the delete: ids keep growing (see _insert_metrics)
                "INSERT INTO samples (stage, step, prompt, completion, scores, reward, time, attempt)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (stage, step, prompt, completion, json.dumps(scores), _clean(reward), time.time(), n),
            )
            if n:
                c.execute("DELETE FROM samples WHERE stage = ? AND step >= ? AND attempt < ?", (stage, step, n))

    def samples(self, stage: str, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._q(
            "SELECT id, step, prompt, completion, scores, reward FROM samples WHERE stage = ? ORDER BY id DESC LIMIT ?",
            (stage, limit),
        )
        return [
            {"id": r[0], "step": r[1], "prompt": r[2], "completion": r[3], "scores": json.loads(r[4]), "reward": r[5]}
            for r in rows
        ]

    # -- results (per-stage structured outputs: battery cells, ratings, sweep cells) --------

    def put_result(self, stage: str, kind: str, key: str, data: dict) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT OR REPLACE INTO results (stage, kind, key, data, time) VALUES (?, ?, ?, ?, ?)",
                (stage, kind, key, json.dumps(data), time.time()),
            )

    def results(self, stage: str, kind: str) -> dict[str, dict]:
        rows = self._q("SELECT key, data FROM results WHERE stage = ? AND kind = ? ORDER BY id", (stage, kind))
        return {r[0]: json.loads(r[1]) for r in rows}
