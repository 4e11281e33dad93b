"""Data lineage: a run's prompts, traces, judge scores and human edits copied in from another run or a file."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from typing import Any

from engine.dims import DIMENSIONS, weighted_score
from engine.store.db import StoreError

# What "the data" of a run is: copied whole, in this order (parents first), ids kept.
DATA_TABLES = ("prompts", "traces", "judge_calls", "score_edits", "llm_calls")
_TRACE_CONTENT = ("call_key", "category", "tier", "idx", "system_prompt", "reasoning", "answer", "judged", "judge_failed",
                  "reviewed", *(f"j_{d}" for d in DIMENSIONS), *(f"h_{d}" for d in DIMENSIONS))


class LineageMixin:
    """Copy data between run databases in one transaction; the lineage record says where it came from."""

    def _columns(self, c: sqlite3.Connection, table: str) -> list[str]:
        return [r[1] for r in c.execute(f"PRAGMA table_info({table})")]

    def data_snapshot(self) -> dict[str, Any]:
        """Every row of the data tables, read in one read transaction (a consistent copy of a live run)."""
        with self._lock:  # type: ignore[attr-defined]
            c = self._conn  # type: ignore[attr-defined]
            c.execute("BEGIN")
            try:
                out = {}
                for table in DATA_TABLES:
                    cols = self._columns(c, table)
                    out[table] = {"columns": cols, "rows": c.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY rowid").fetchall()}
            finally:
                c.execute("COMMIT")
        return out

    def _require_empty(self, c: sqlite3.Connection) -> None:
        for table in ("prompts", "traces"):
            if c.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone():
                raise StoreError(f"{self.path}: this run has {table} already; data is taken from another run only into a new run")  # type: ignore[attr-defined]

    def copy_data(self, snapshot: dict[str, Any], lineage: dict[str, Any], weights: dict[str, float]) -> dict[str, int]:
        """Insert a snapshot (ids kept) and the lineage record in one transaction. Returns rows per table.
        Effective weighted scores are recomputed with this run's reward weights (other weights: other SFT data)."""
        counts = {}
        with self._tx() as c:  # type: ignore[attr-defined]
            self._require_empty(c)
            for table in DATA_TABLES:
                mine = set(self._columns(c, table))
                src = snapshot[table]["columns"]
                keep = [i for i, col in enumerate(src) if col in mine]  # columns this schema knows
                cols = [src[i] for i in keep]
                rows = [tuple(r[i] for i in keep) for r in snapshot[table]["rows"]]
                c.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows)
                counts[table] = len(rows)
            for (trace_id,) in c.execute("SELECT id FROM traces").fetchall():
                self._reweigh(c, trace_id, weights)  # type: ignore[attr-defined]
            self._write_lineage(c, lineage, counts)
        return counts

    def import_traces(self, data: dict[str, list[dict[str, Any]]], lineage: dict[str, Any],
                      weights: dict[str, float]) -> dict[str, int]:
        """Insert validated file rows (engine.reporting.imports) and the lineage record in one transaction."""
        now = time.time()
        with self._tx() as c:  # type: ignore[attr-defined]
            self._require_empty(c)
            ids = {}
            for p in data["prompts"]:
                cur = c.execute("INSERT INTO prompts (key, category, turns, source) VALUES (?, ?, ?, ?)",
                                (p["key"], p["category"], json.dumps(p["turns"]), p["source"]))
                ids[p["key"]] = cur.lastrowid
            edits = 0
            for t in data["traces"]:
                judge, human = t["judge"] or {}, t["human"]
                effective = {d: human.get(d, judge.get(d)) for d in DIMENSIONS}
                weighted = weighted_score(effective, weights) if judge else None
                cols = ["call_key", "prompt_id", "category", "tier", "idx", "reasoning", "answer", "backend", "model",
                        "created", "judged", "judge_failed", "judge_backend", "reviewed", "weighted",
                        *(f"j_{d}" for d in DIMENSIONS), *(f"h_{d}" for d in DIMENSIONS)]
                vals = [t["call_key"], ids[t["prompt_key"]], t["category"], t["tier"], t["idx"], t["reasoning"], t["answer"],
                        "import", lineage.get("source_name"), now, int(bool(judge) or t["judge_failed"]),
                        int(t["judge_failed"]), "import" if judge else None, int(t["reviewed"]), weighted,
                        *(judge.get(d) for d in DIMENSIONS), *(human.get(d) for d in DIMENSIONS)]
                cur = c.execute(f"INSERT INTO traces ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", vals)
                c.execute("INSERT INTO llm_calls (key, result, time) VALUES (?, 'trace', ?)", (t["call_key"], now))
                for d, v in human.items():  # a human score keeps its history: the edit that made it
                    c.execute("INSERT INTO score_edits (trace_id, dim, old, new, time) VALUES (?, ?, NULL, ?, ?)",
                              (cur.lastrowid, d, v, now))
                    edits += 1
            counts = {"prompts": len(data["prompts"]), "traces": len(data["traces"]), "score_edits": edits}
            self._write_lineage(c, lineage, counts)
        return counts

    def _write_lineage(self, c: sqlite3.Connection, lineage: dict[str, Any], counts: dict[str, int]) -> None:
        record = {**lineage, "counts": counts, "content_hash": self._hash(c), "time": time.time()}
        c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('lineage', ?)", (json.dumps(record),))

    def lineage(self) -> dict[str, Any] | None:
        """Where this run's data came from (source id or file, counts, content hash), or None for its own data."""
        rows = self._q("SELECT value FROM meta WHERE key = 'lineage'")  # type: ignore[attr-defined]
        return json.loads(rows[0][0]) if rows else None

    def record_sft_source(self, record: dict[str, Any]) -> None:
        """Where this run's SFT adapter came from: trained here, or reused from the SFT cache (hash, cache folder,
        the run that trained it). Kept beside the data lineage, under its own key."""
        with self._tx() as c:  # type: ignore[attr-defined]
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('sft_source', ?)",
                      (json.dumps({**record, "time": time.time()}),))

    def sft_source(self) -> dict[str, Any] | None:
        rows = self._q("SELECT value FROM meta WHERE key = 'sft_source'")  # type: ignore[attr-defined]
        return json.loads(rows[0][0]) if rows else None

    def data_hash(self) -> str:
        """sha256 over the data's content (not its ids): prompts, traces with judge and human scores, edits."""
        with self._lock:  # type: ignore[attr-defined]
            return self._hash(self._conn)  # type: ignore[attr-defined]

    def trace_hashes(self) -> dict[int, str]:
        """Per trace id, sha256 of its content: equal ids with equal hashes mean the very same traces."""
        cols = ", ".join(f"t.{c}" for c in _TRACE_CONTENT)
        rows = self._q(f"SELECT t.id, p.key, {cols} FROM traces t LEFT JOIN prompts p ON p.id = t.prompt_id")  # type: ignore[attr-defined]
        return {r[0]: hashlib.sha256(json.dumps(list(r[1:])).encode()).hexdigest() for r in rows}

    def _hash(self, c: sqlite3.Connection) -> str:
        h = hashlib.sha256()
        for r in c.execute("SELECT key, category, turns FROM prompts ORDER BY key"):
            h.update(json.dumps(["p", *r]).encode())
        cols = ", ".join(f"t.{col}" for col in _TRACE_CONTENT)
        for r in c.execute(f"SELECT p.key, {cols} FROM traces t LEFT JOIN prompts p ON p.id = t.prompt_id ORDER BY t.call_key"):
            h.update(json.dumps(["t", *r]).encode())
        for r in c.execute("SELECT t.call_key, e.dim, e.old, e.new, e.undone FROM score_edits e JOIN traces t ON t.id = e.trace_id"
                           " ORDER BY t.call_key, e.id"):
            h.update(json.dumps(["e", *r]).encode())
        return h.hexdigest()

    def judge_human_pairs_by_trace(self) -> dict[str, dict[str, tuple[float, float]]]:
        """Per dimension, {call_key: (judge, human)} for edited traces: runs sharing lineage share call keys, so
        pooled agreement counts each trace once."""
        cols = ", ".join(f"j_{d}, h_{d}" for d in DIMENSIONS)
        rows = self._q(  # type: ignore[attr-defined]
            f"SELECT call_key, {cols} FROM traces WHERE id IN (SELECT DISTINCT trace_id FROM score_edits)")
        out: dict[str, dict[str, tuple[float, float]]] = {d: {} for d in DIMENSIONS}
        for r in rows:
            for i, d in enumerate(DIMENSIONS):
                judge, human = r[1 + 2 * i], r[2 + 2 * i]
                if judge is not None and human is not None:
                    out[d][r[0]] = (judge, human)
        return out
