"""The run database's plumbing: one SQLite file per run (WAL), its schema and migrations, transactions."""

from __future__ import annotations

import errno
import math
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.dims import DIMENSIONS
from engine.errors import UserError

SCHEMA_VERSION = 4

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
    # 2: process identity for liveness (a pid plus its start time), for attempts and the driver; one row per attempt.
    """
    ALTER TABLE stages ADD COLUMN pid_started REAL;
    ALTER TABLE attempts ADD COLUMN pid_started REAL;
    ALTER TABLE run ADD COLUMN driver_started REAL;
    CREATE UNIQUE INDEX attempts_by_stage ON attempts (stage, n);
    """,
    # 3 (issue 21): the playground's exchanges, one row per model's answer to a prompt; `turn` groups the answers of
    # one question, `parent` the earlier turn a follow-up continues. Scores as JSON (null where the judge failed).
    """
    CREATE TABLE exchanges (
        id INTEGER PRIMARY KEY, turn INTEGER NOT NULL, parent INTEGER, time REAL NOT NULL, model TEXT NOT NULL,
        model_source TEXT, prompt TEXT NOT NULL, history TEXT, settings TEXT NOT NULL, answer TEXT, reasoning TEXT,
        status TEXT NOT NULL, error TEXT, note TEXT, judge TEXT, scores TEXT, weighted REAL, judge_error TEXT,
        prompt_tokens INTEGER, new_tokens INTEGER, ttft_s REAL, tokens_per_s REAL, total_s REAL, promoted TEXT
    );
    CREATE INDEX exchanges_by_turn ON exchanges (turn, id);
    """,
    # 4 (issue 20): the attempt that wrote each metric, sample and event. A resumed attempt's row for a step replaces
    # the earlier attempts' rows of that step and later (engine.store.telemetry), so every reader sees one series.
    """
    ALTER TABLE metrics ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE samples ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE events ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX metrics_by_step ON metrics (stage, key, step);
    CREATE INDEX samples_by_step ON samples (stage, step);
    """,
]


class StoreError(UserError):
    """The run database is missing or not a run database."""


def disk_full(err: BaseException) -> bool:
    """ENOSPC or a quota from the OS, or SQLite's own word for it."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return True
    return "database or disk is full" in str(err) or "No space left on device" in str(err)


def read_only(err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return True
    text = str(err)
    return "readonly database" in text or "read-only" in text or "unable to open database file" in text


def free_space(path: str | Path) -> int | None:
    """Bytes free on the disk holding `path` (its nearest existing folder), or None when it cannot be told."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def human_bytes(n: float | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def write_failure(err: BaseException, path: str | Path, needed: int | None = None) -> str:
    """One line that says why a write failed: a full disk names the disk and the space it needs, a read-only one
    says so; anything else names the file and the error."""
    path = Path(path)
    folder = path.parent if path.suffix else path
    if disk_full(err):
        need = f"; it needs {human_bytes(needed)} more" if needed else "; free some space"
        return (f"the disk holding {folder} is full ({human_bytes(free_space(folder))} free{need}), nothing after the"
                f" last commit was saved; `aba resume` continues once there is room")
    if read_only(err):
        why = "the file or its folder is not writable" if not os.access(folder, os.W_OK) or (
            path.exists() and not os.access(path, os.W_OK)) else str(err).splitlines()[0]
        return f"{path} is read-only ({why}): nothing was saved"
    first = (str(err).splitlines() or [""])[0]
    return f"{path}: {type(err).__name__}: {first}"


def clean_number(value: float | None) -> float | None:
    """NaN and infinities are stored as null (JSON loggers crash on NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class Database:
    """One connection to a run database; the wings of RunStore add typed access. Safe to share between threads."""

    def __init__(self, path: str | Path, *, create: bool = False, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        self.immutable = False  # opened read-only without its -wal/-shm files (a read-only folder)
        if not create and not self.path.exists():
            raise StoreError(f"{self.path}: no run database here")
        if readonly:
            self._upgrade_if_older()
        self._lock = threading.RLock()
        if readonly:
            # SQLite itself refuses every write on this connection ("attempt to write a readonly database").
            self._conn = self._open_readonly()
        else:
            self._conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA busy_timeout = 30000")
        try:
            mode = self._conn.execute("PRAGMA journal_mode" if readonly else "PRAGMA journal_mode = WAL").fetchone()
        except sqlite3.DatabaseError as err:
            if read_only(err):
                raise StoreError(f"{self.path} is read-only ({err}): it can be read, not written") from None
            raise StoreError(f"{self.path}: not a run database ({err})") from None
        if readonly and mode[0] != "wal" and not self.immutable:
            raise StoreError(f"{self.path}: not a run database (journal mode {mode[0]})")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("PRAGMA foreign_keys = ON")
        if not readonly:
            self._migrate()
        elif self.schema_version() != SCHEMA_VERSION:
            raise StoreError(f"{self.path}: schema version {self.schema_version()}, this aba reads {SCHEMA_VERSION}")

    def _open_readonly(self) -> sqlite3.Connection:
        """mode=ro; a WAL database whose -shm cannot be made (a read-only folder without the -wal/-shm files) is
        opened immutable instead: no writer can be at work in a folder no one can write to."""
        uri = self.path.resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=30.0, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            return conn
        except sqlite3.OperationalError as err:
            if os.access(self.path.parent, os.W_OK) and "readonly" not in str(err) and "unable to open" not in str(err):
                return conn  # another failure: the probe below reports it
            conn.close()
        self.immutable = True
        return sqlite3.connect(uri + "&immutable=1", uri=True, timeout=30.0, check_same_thread=False,
                               isolation_level=None)

    def _upgrade_if_older(self) -> None:
        """A reader of a run made by an older aba: a short-lived writer migrates it first (readers cannot)."""
        probe = sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True, timeout=30.0)
        try:
            row = probe.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.DatabaseError:
            return  # not a run database, or an empty one: the read-only open below says so
        finally:
            probe.close()
        if row and int(row[0]) < SCHEMA_VERSION:
            Database(self.path).close()

    # -- plumbing ---------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self):
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

