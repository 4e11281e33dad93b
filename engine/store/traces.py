"""Generated data: prompts, traces, the LLM call ledger (exactly-once generation) and judge scores."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Any

from engine.dims import DIMENSIONS, TIERS, weighted_score
from engine.store.db import StoreError

# Trace ids follow the order concurrent calls finished in; everything that feeds training or a metric series reads
# traces in the order datagen makes its calls instead (prompt, tier as in TIERS, index, then call key), so the same
# data gives the same numbers, and a datagen with one call in flight gives ids in this very order.
STABLE_ORDER = ("t.prompt_id, " + "CASE t.tier " + " ".join(f"WHEN '{t}' THEN {i}" for i, t in enumerate(TIERS))
                + f" ELSE {len(TIERS)} END, t.idx, t.call_key")

class TracesMixin:
    """Mixed into RunStore: needs `_tx`, `_q` and `path` from Database."""

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
        value = None if row is None else weighted_score(dict(zip(DIMENSIONS, row)), weights)
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
        return [r[0] for r in self._q(f"SELECT id FROM traces t WHERE judged = 0 ORDER BY {STABLE_ORDER}")]

    def trace(self, trace_id: int) -> dict[str, Any]:
        rows = self._trace_rows("WHERE t.id = ?", (trace_id,))
        if not rows:
            raise StoreError(f"{self.path}: no trace {trace_id}")
        return rows[0]

    def traces(self, *, tier: str | None = None, judged_only: bool = False, exclude_failed: bool = False) -> list[dict[str, Any]]:
        """Traces in STABLE_ORDER, optionally one tier; judged_only keeps traces the judge scored, exclude_failed drops
        those whose judge failed (an unjudged trace stays)."""
        where, args = [], []
        if tier:
            where.append("t.tier = ?")
            args.append(tier)
        if judged_only:
            where.append("t.judged = 1 AND t.judge_failed = 0")
        elif exclude_failed:
            where.append("t.judge_failed = 0")
        return self._trace_rows(("WHERE " + " AND ".join(where)) if where else "", args, STABLE_ORDER)

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

    def trace_count(self) -> int:
        return int(self._q("SELECT COUNT(*) FROM traces")[0][0])

    def trace_ids(self) -> list[int]:
        return [r[0] for r in self._q("SELECT id FROM traces ORDER BY id")]

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
