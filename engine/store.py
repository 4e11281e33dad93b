"""The run database: one SQLite file per run, the single source of truth. All SQL lives here."""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.dims import DIMENSIONS
from engine.errors import UserError

SCHEMA_VERSION = 1
STATUSES = ("pending", "running", "succeeded", "failed", "crashed", "cancelled", "skipped")
FINAL = frozenset({"succeeded", "failed", "crashed", "cancelled", "skipped"})

_J = ", ".join(f"j_{d} REAL" for d in DIMENSIONS)
_H = ", ".join(f"h_{d} REAL" for d in DIMENSIONS)

# Each entry migrates the schema from version i to i+1.
MIGRATIONS: list[str] = [
    f"""
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
    CREATE TABLE run (
        id TEXT PRIMARY KEY, name TEXT, created REAL, config_source TEXT, driver_pid INTEGER
    );
    CREATE TABLE stages (
        name TEXT PRIMARY KEY, position INTEGER NOT NULL, selected INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
        pid INTEGER, started REAL, ended REAL, reason TEXT, exit_code INTEGER,
        cancel_requested INTEGER NOT NULL DEFAULT 0, progress REAL, progress_total REAL, progress_label TEXT
    );
    CREATE TABLE attempts (
        id INTEGER PRIMARY KEY, stage TEXT NOT NULL, n INTEGER NOT NULL, pid INTEGER,
        started REAL, ended REAL, status TEXT, reason TEXT, exit_code INTEGER
    );
    CREATE TABLE heartbeats (stage TEXT PRIMARY KEY, pid INTEGER, time REAL);
    CREATE TABLE events (id INTEGER PRIMARY KEY, stage TEXT, time REAL, kind TEXT, message TEXT, data TEXT);
    CREATE TABLE metrics (
        id INTEGER PRIMARY KEY, stage TEXT NOT NULL, step INTEGER NOT NULL, key TEXT NOT NULL, value REAL, time REAL
    );
    CREATE INDEX metrics_by_key ON metrics (stage, key, id);
    CREATE TABLE logs (id INTEGER PRIMARY KEY, stage TEXT, time REAL, level TEXT, message TEXT);
    CREATE TABLE artifacts (id INTEGER PRIMARY KEY, stage TEXT, kind TEXT, path TEXT, meta TEXT, time REAL);
    CREATE TABLE samples (
        id INTEGER PRIMARY KEY, stage TEXT, step INTEGER, prompt TEXT, completion TEXT, scores TEXT,
        reward REAL, time REAL
    );
    CREATE TABLE prompts (
        id INTEGER PRIMARY KEY, key TEXT UNIQUE NOT NULL, category TEXT NOT NULL, turns TEXT NOT NULL,
        source TEXT NOT NULL
    );
    CREATE TABLE traces (
        id INTEGER PRIMARY KEY, call_key TEXT UNIQUE NOT NULL, prompt_id INTEGER REFERENCES prompts(id),
        category TEXT, tier TEXT, idx INTEGER, system_prompt TEXT, reasoning TEXT, answer TEXT,
        backend TEXT, model TEXT, offline INTEGER NOT NULL DEFAULT 0, created REAL,
        tokens_in INTEGER, tokens_out INTEGER,
        judged INTEGER NOT NULL DEFAULT 0, judge_failed INTEGER NOT NULL DEFAULT 0, judge_rescaled INTEGER NOT NULL DEFAULT 0,
        judge_backend TEXT, judge_raw TEXT, reviewed INTEGER NOT NULL DEFAULT 0, weighted REAL,
        {_J}, {_H}
    );
    CREATE INDEX traces_by_category ON traces (category, tier);
    CREATE INDEX traces_by_weighted ON traces (weighted);
    CREATE INDEX traces_by_entropy_reduction ON traces (COALESCE(h_entropy_reduction, j_entropy_reduction));
    CREATE INDEX traces_by_calibrated_uncertainty ON traces (COALESCE(h_calibrated_uncertainty, j_calibrated_uncertainty));
    CREATE INDEX traces_by_conflict_resolution ON traces (COALESCE(h_conflict_resolution, j_conflict_resolution));
    CREATE INDEX traces_by_context_faithfulness ON traces (COALESCE(h_context_faithfulness, j_context_faithfulness));
    CREATE INDEX traces_by_process_transparency ON traces (COALESCE(h_process_transparency, j_process_transparency));
    CREATE INDEX traces_by_honest_engagement ON traces (COALESCE(h_honest_engagement, j_honest_engagement));
    CREATE INDEX traces_by_helpfulness ON traces (COALESCE(h_helpfulness, j_helpfulness));
    CREATE INDEX traces_by_harm_avoidance ON traces (COALESCE(h_harm_avoidance, j_harm_avoidance));
    CREATE INDEX traces_by_instruction_following ON traces (COALESCE(h_instruction_following, j_instruction_following));
    CREATE TABLE judge_calls (
        id INTEGER PRIMARY KEY, trace_id INTEGER, attempt INTEGER, raw TEXT, error TEXT, time REAL
    );
    CREATE TABLE score_edits (
        id INTEGER PRIMARY KEY, trace_id INTEGER NOT NULL, dim TEXT NOT NULL, old REAL, new REAL,
        time REAL NOT NULL, undone INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX score_edits_by_trace ON score_edits (trace_id, id);
    CREATE TABLE llm_calls (key TEXT PRIMARY KEY, result TEXT, time REAL);
    CREATE TABLE results (
        id INTEGER PRIMARY KEY, stage TEXT, kind TEXT, key TEXT, data TEXT, time REAL, UNIQUE(stage, kind, key)
    );
    """,
]


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


@dataclass(frozen=True)
class MetricRow:
    id: int
    stage: str
    step: int
    key: str
    value: float | None
    time: float


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


class StoreError(UserError):
    """The run database is missing or not a run database."""


def _clean(value: float | None) -> float | None:
    """NaN and infinities are stored as null (JSON loggers crash on NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class RunStore:
    """Typed access to one run's database. Safe to share between threads of one process."""

    def __init__(self, path: str | Path, *, create: bool = False, readonly: bool = False):
        self.path = Path(path)
        if not create and not self.path.exists():
            raise StoreError(f"{self.path}: no run database here")
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA busy_timeout = 30000")
        try:
            self._conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{self.path}: not a run database ({err})") from None
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("PRAGMA foreign_keys = ON")
        if not readonly:
            self._migrate()
        elif self.schema_version() != SCHEMA_VERSION:
            raise StoreError(f"{self.path}: schema version {self.schema_version()}, this aba reads {SCHEMA_VERSION}")

    # -- plumbing ---------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, retried when another writer holds the lock past busy_timeout."""
        with self._lock:
            for attempt in range(20):
                try:
                    self._conn.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as err:
                    if "locked" not in str(err) and "busy" not in str(err):
                        raise
                    time.sleep(0.05 * (attempt + 1))
            else:
                raise sqlite3.OperationalError(f"{self.path}: database stayed locked")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")

    def _q(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            cur = self._conn.execute(sql, args)
            return cur.fetchall()

    def schema_version(self) -> int:
        try:
            rows = self._q("SELECT value FROM meta WHERE key = 'schema_version'")
        except sqlite3.OperationalError:
            return 0
        return int(rows[0][0]) if rows else 0

    def _migrate(self) -> None:
        with self._tx() as c:
            current = 0
            has_meta = c.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone()
            if has_meta:
                row = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                current = int(row[0]) if row else 0
            if current > SCHEMA_VERSION:
                raise StoreError(f"{self.path}: made by a newer aba (schema {current} > {SCHEMA_VERSION})")
            for version in range(current, SCHEMA_VERSION):
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        c.execute(statement)
                c.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(version + 1),)
                )

    def integrity_check(self) -> str:
        return str(self._q("PRAGMA integrity_check")[0][0])

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

    # -- metrics ----------------------------------------------------------------------------

    def add_metrics(self, stage: str, step: int, values: dict[str, float | None], when: float | None = None) -> None:
        when = time.time() if when is None else when
        rows = [(stage, int(step), k, _clean(v), when) for k, v in values.items()]
        with self._tx() as c:
            c.executemany("INSERT INTO metrics (stage, step, key, value, time) VALUES (?, ?, ?, ?, ?)", rows)

    def add_metric_rows(self, rows: Iterable[tuple[str, int, str, float | None, float]]) -> None:
        """Bulk insert of (stage, step, key, value, time) rows in one transaction."""
        with self._tx() as c:
            c.executemany(
                "INSERT INTO metrics (stage, step, key, value, time) VALUES (?, ?, ?, ?, ?)",
                ((s, st, k, _clean(v), t) for s, st, k, v, t in rows),
            )

    def metrics_since(self, after_id: int = 0, stage: str | None = None, limit: int = 100_000) -> list[MetricRow]:
        """Rows newer than `after_id`, oldest first."""
        if stage is None:
            rows = self._q(
                "SELECT id, stage, step, key, value, time FROM metrics WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
            )
        else:
            rows = self._q(
                "SELECT id, stage, step, key, value, time FROM metrics WHERE id > ? AND stage = ? ORDER BY id LIMIT ?",
                (after_id, stage, limit),
            )
        return [MetricRow(*r) for r in rows]

    def metric_series(self, stage: str, key: str, after_id: int = 0) -> tuple[list[int], list[int], list[float | None]]:
        """(ids, steps, values) of one key, using the (stage, key, id) index."""
        rows = self._q(
            "SELECT id, step, value FROM metrics WHERE stage = ? AND key = ? AND id > ? ORDER BY id", (stage, key, after_id)
        )
        return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]

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
        with self._tx() as c:
            c.execute(
                "INSERT INTO events (stage, time, kind, message, data) VALUES (?, ?, ?, ?, ?)",
                (stage, time.time(), kind, message, json.dumps(data or {})),
            )

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
        with self._tx() as c:
            c.execute(
                "INSERT INTO samples (stage, step, prompt, completion, scores, reward, time) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (stage, step, prompt, completion, json.dumps(scores), _clean(reward), time.time()),
            )

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

    # -- LLM call ledger (exactly-once generation) ------------------------------------------

    def done_calls(self, keys: Iterable[str]) -> set[str]:
        keys = list(keys)
        done: set[str] = set()
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            done |= {r[0] for r in self._q(f"SELECT key FROM llm_calls WHERE key IN ({marks})", chunk)}
        return done

    # -- prompts and traces -----------------------------------------------------------------

    def add_prompt(self, key: str, category: str, turns: list[dict], source: str) -> int:
        with self._tx() as c:
            c.execute(
                "INSERT OR IGNORE INTO prompts (key, category, turns, source) VALUES (?, ?, ?, ?)",
                (key, category, json.dumps(turns), source),
            )
            return int(c.execute("SELECT id FROM prompts WHERE key = ?", (key,)).fetchone()[0])

    def prompts(self, category: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT id, key, category, turns, source FROM prompts"
        rows = self._q(sql + (" WHERE category = ? ORDER BY id" if category else " ORDER BY id"), (category,) if category else ())
        return [{"id": r[0], "key": r[1], "category": r[2], "turns": json.loads(r[3]), "source": r[4]} for r in rows]

    def add_trace(self, trace: dict[str, Any], weights: dict[str, float] | None = None) -> int | None:
        """Insert a generated trace and mark its call done, in one transaction. None if the call was done before."""
        with self._tx() as c:
            if c.execute("SELECT 1 FROM llm_calls WHERE key = ?", (trace["call_key"],)).fetchone():
                return None
            cur = c.execute(
                "INSERT INTO traces (call_key, prompt_id, category, tier, idx, system_prompt, reasoning, answer, backend,"
                " model, offline, created, tokens_in, tokens_out) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    trace["call_key"], trace.get("prompt_id"), trace.get("category"), trace.get("tier"), trace.get("idx"),
                    trace.get("system_prompt"), trace.get("reasoning", ""), trace.get("answer", ""), trace.get("backend"),
                    trace.get("model"), int(bool(trace.get("offline"))), time.time(), trace.get("tokens_in"),
                    trace.get("tokens_out"),
                ),
            )
            c.execute("INSERT INTO llm_calls (key, result, time) VALUES (?, 'trace', ?)", (trace["call_key"], time.time()))
            trace_id = int(cur.lastrowid or 0)
            if trace.get("scores") is not None:
                self._write_judge(c, trace_id, trace["scores"], trace.get("judge_backend", ""), None, False, weights)
            return trace_id

    def mark_call_failed(self, key: str, error: str) -> None:
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO llm_calls (key, result, time) VALUES (?, ?, ?)", (key, "failed: " + error, time.time()))

    def failed_calls(self) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in self._q("SELECT key, result FROM llm_calls WHERE result LIKE 'failed:%' ORDER BY key")]

    def retry_failed_calls(self) -> int:
        """Forget failed calls so a resumed datagen tries them again."""
        with self._tx() as c:
            return c.execute("DELETE FROM llm_calls WHERE result LIKE 'failed:%'").rowcount

    def _write_judge(
        self, c: sqlite3.Connection, trace_id: int, scores: dict[str, float], backend: str, raw: str | None,
        rescaled: bool, weights: dict[str, float] | None,
    ) -> None:
        sets = ", ".join(f"j_{d} = ?" for d in DIMENSIONS)
        c.execute(
            f"UPDATE traces SET judged = 1, judge_failed = 0, judge_rescaled = ?, judge_backend = ?, judge_raw = ?, {sets}"
            " WHERE id = ?",
            (int(rescaled), backend, raw, *[scores[d] for d in DIMENSIONS], trace_id),
        )
        self._reweigh(c, trace_id, weights)

    def _reweigh(self, c: sqlite3.Connection, trace_id: int, weights: dict[str, float] | None) -> None:
        if weights is None:
            return
        cols = ", ".join(f"COALESCE(h_{d}, j_{d})" for d in DIMENSIONS)
        row = c.execute(f"SELECT {cols} FROM traces WHERE id = ?", (trace_id,)).fetchone()
        if row is None or any(v is None for v in row):
            c.execute("UPDATE traces SET weighted = NULL WHERE id = ?", (trace_id,))
            return
        total = sum(weights.values())
        value = sum(v * weights[d] for v, d in zip(row, DIMENSIONS)) / total
        c.execute("UPDATE traces SET weighted = ? WHERE id = ?", (value, trace_id))

    def set_judge_scores(
        self, trace_id: int, scores: dict[str, float], backend: str, raw: str | None, rescaled: bool,
        weights: dict[str, float] | None,
    ) -> None:
        with self._tx() as c:
            self._write_judge(c, trace_id, scores, backend, raw, rescaled, weights)

    def mark_judge_failed(self, trace_id: int, backend: str, raw: str | None, reason: str) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE traces SET judged = 1, judge_failed = 1, judge_backend = ?, judge_raw = ? WHERE id = ?",
                (backend, raw, trace_id),
            )
            c.execute(
                "INSERT INTO judge_calls (trace_id, attempt, raw, error, time) VALUES (?, -1, ?, ?, ?)",
                (trace_id, raw, reason, time.time()),
            )

    def add_judge_call(self, trace_id: int, attempt: int, raw: str | None, error: str | None) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO judge_calls (trace_id, attempt, raw, error, time) VALUES (?, ?, ?, ?, ?)",
                (trace_id, attempt, raw, error, time.time()),
            )

    def unjudged_trace_ids(self) -> list[int]:
        return [r[0] for r in self._q("SELECT id FROM traces WHERE judged = 0 ORDER BY id")]

    def trace(self, trace_id: int) -> dict[str, Any]:
        rows = self._trace_rows("WHERE t.id = ?", (trace_id,))
        if not rows:
            raise StoreError(f"{self.path}: no trace {trace_id}")
        return rows[0]

    def traces(self, where: str = "", args: Sequence[Any] = (), order: str = "t.id", limit: int = -1, offset: int = 0) -> list[dict[str, Any]]:
        return self._trace_rows(where, args, order, limit, offset)

    def _trace_rows(self, where: str, args: Sequence[Any], order: str = "t.id", limit: int = -1, offset: int = 0) -> list[dict]:
        dims_j = ", ".join(f"t.j_{d}" for d in DIMENSIONS)
        dims_h = ", ".join(f"t.h_{d}" for d in DIMENSIONS)
        rows = self._q(
            "SELECT t.id, t.prompt_id, t.category, t.tier, t.idx, t.system_prompt, t.reasoning, t.answer, t.backend,"
            " t.model, t.offline, t.judged, t.judge_failed, t.judge_rescaled, t.judge_backend, t.judge_raw, t.reviewed,"
            f" t.weighted, t.tokens_in, t.tokens_out, p.turns, {dims_j}, {dims_h}"
            f" FROM traces t LEFT JOIN prompts p ON p.id = t.prompt_id {where} ORDER BY {order} LIMIT ? OFFSET ?",
            (*args, limit, offset),
        )
        n = len(DIMENSIONS)
        out = []
        for r in rows:
            judge = {d: r[21 + i] for i, d in enumerate(DIMENSIONS)}
            human = {d: r[21 + n + i] for i, d in enumerate(DIMENSIONS) if r[21 + n + i] is not None}
            effective = {d: human.get(d, judge[d]) for d in DIMENSIONS}
            out.append({
                "id": r[0], "prompt_id": r[1], "category": r[2], "tier": r[3], "idx": r[4], "system_prompt": r[5],
                "reasoning": r[6], "answer": r[7], "backend": r[8], "model": r[9], "offline": bool(r[10]),
                "judged": bool(r[11]), "judge_failed": bool(r[12]), "judge_rescaled": bool(r[13]),
                "judge_backend": r[14], "judge_raw": r[15], "reviewed": bool(r[16]), "weighted": r[17],
                "tokens_in": r[18], "tokens_out": r[19], "turns": json.loads(r[20]) if r[20] else [],
                "judge": judge if r[11] and not r[12] else None, "human": human,
                "effective": effective if r[11] and not r[12] else None,
            })
        return out

    def trace_count(self, where: str = "", args: Sequence[Any] = ()) -> int:
        return int(self._q(f"SELECT COUNT(*) FROM traces t {where}", args)[0][0])

    def trace_ids(self, where: str = "", args: Sequence[Any] = (), order: str = "t.id") -> list[int]:
        return [r[0] for r in self._q(f"SELECT t.id FROM traces t {where} ORDER BY {order}", args)]

    SORTABLE = ("id", "category", "tier", "weighted", *DIMENSIONS, "reviewed", "judge_failed")

    def filtered_trace_ids(
        self, *, category: str | None = None, tier: str | None = None, min_score: float | None = None,
        max_score: float | None = None, unreviewed: bool = False, failed: bool = False, sort: str = "id",
        descending: bool = False,
    ) -> list[int]:
        """Trace ids for the review table, filtered and sorted in SQL (fast at 100k traces)."""
        where, args = ["1=1"], []
        if category:
            where.append("category = ?")
            args.append(category)
        if tier:
            where.append("tier = ?")
            args.append(tier)
        if min_score is not None:
            where.append("weighted >= ?")
            args.append(min_score)
        if max_score is not None:
            where.append("weighted <= ?")
            args.append(max_score)
        if unreviewed:
            where.append("reviewed = 0")
        if failed:
            where.append("judge_failed = 1")
        if sort not in self.SORTABLE:
            raise StoreError(f"cannot sort by {sort!r}")
        expr = f"COALESCE(h_{sort}, j_{sort})" if sort in DIMENSIONS else sort
        direction = "DESC" if descending else "ASC"
        rows = self._q(f"SELECT id FROM traces WHERE {' AND '.join(where)} ORDER BY {expr} {direction}, id", args)
        return [r[0] for r in rows]

    def trace_categories(self) -> list[str]:
        return [r[0] for r in self._q("SELECT DISTINCT category FROM traces WHERE category IS NOT NULL ORDER BY 1")]

    def trace_summaries(self, ids: Sequence[int]) -> list[tuple]:
        """Narrow rows for a table page: id, category, tier, weighted, nine effective scores, reviewed, failed."""
        if not ids:
            return []
        eff = ", ".join(f"COALESCE(h_{d}, j_{d})" for d in DIMENSIONS)
        marks = ",".join("?" * len(ids))
        rows = self._q(
            f"SELECT id, category, tier, weighted, {eff}, reviewed, judge_failed, "
            + " + ".join(f"(h_{d} IS NOT NULL)" for d in DIMENSIONS)
            + f" FROM traces WHERE id IN ({marks})",
            list(ids),
        )
        by_id = {r[0]: tuple(r) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    # -- human review -----------------------------------------------------------------------

    def edit_score(self, trace_id: int, dim: str, value: float | None, weights: dict[str, float] | None = None) -> None:
        """Set (or with None, clear back to the judge's) the human score of one dimension; history is kept."""
        if dim not in DIMENSIONS:
            raise StoreError(f"unknown dimension {dim!r}")
        if value is not None and not 0.0 <= value <= 1.0:
            raise StoreError(f"{dim}: score must be within 0..1, got {value}")
        with self._tx() as c:
            old = c.execute(f"SELECT h_{dim} FROM traces WHERE id = ?", (trace_id,)).fetchone()
            if old is None:
                raise StoreError(f"no trace {trace_id}")
            c.execute(
                "INSERT INTO score_edits (trace_id, dim, old, new, time) VALUES (?, ?, ?, ?, ?)",
                (trace_id, dim, old[0], value, time.time()),
            )
            c.execute(f"UPDATE traces SET h_{dim} = ? WHERE id = ?", (value, trace_id))
            self._reweigh(c, trace_id, weights)

    def undo_edit(self, trace_id: int, weights: dict[str, float] | None = None) -> dict[str, Any] | None:
        """Undo the newest live edit of a trace. Returns the edit undone, or None."""
        with self._tx() as c:
            row = c.execute(
                "SELECT id, dim, old, new FROM score_edits WHERE trace_id = ? AND undone = 0 ORDER BY id DESC LIMIT 1",
                (trace_id,),
            ).fetchone()
            if row is None:
                return None
            c.execute("UPDATE score_edits SET undone = 1 WHERE id = ?", (row[0],))
            c.execute(f"UPDATE traces SET h_{row[1]} = ? WHERE id = ?", (row[2], trace_id))
            self._reweigh(c, trace_id, weights)
            return {"dim": row[1], "old": row[2], "new": row[3]}

    def score_edits(self, trace_id: int | None = None) -> list[dict[str, Any]]:
        sql = "SELECT id, trace_id, dim, old, new, time, undone FROM score_edits"
        rows = self._q(sql + (" WHERE trace_id = ? ORDER BY id" if trace_id else " ORDER BY id"), (trace_id,) if trace_id else ())
        keys = ("id", "trace_id", "dim", "old", "new", "time", "undone")
        return [dict(zip(keys, r)) for r in rows]

    def set_reviewed(self, trace_id: int, reviewed: bool = True) -> None:
        with self._tx() as c:
            c.execute("UPDATE traces SET reviewed = ? WHERE id = ?", (int(reviewed), trace_id))

    def judge_human_pairs(self) -> dict[str, list[tuple[float, float]]]:
        """Per dimension, (judge, human) for every trace a human changed (only edited traces are read)."""
        cols = ", ".join(f"j_{d}, h_{d}" for d in DIMENSIONS)
        rows = self._q(f"SELECT {cols} FROM traces WHERE id IN (SELECT DISTINCT trace_id FROM score_edits)")
        out: dict[str, list[tuple[float, float]]] = {d: [] for d in DIMENSIONS}
        for r in rows:
            for i, d in enumerate(DIMENSIONS):
                judge, human = r[2 * i], r[2 * i + 1]
                if judge is not None and human is not None:
                    out[d].append((judge, human))
        return out
