"""Human review: score edits kept beside the judge's (never over them), undo, reviewed marks, agreement pairs."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from engine.dims import DIMENSIONS
from engine.store.db import StoreError

class ReviewMixin:
    """Mixed into RunStore: needs `_tx`, `_q` and `path` from Database."""

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

    def judge_human_pairs(self, dims: Sequence[str] | None = None) -> dict[str, list[tuple[float, float]]]:
        """Per dimension (all, or those asked), (judge, human) for every trace a human changed (only edited traces
        are read; with dims, only traces with an edit of those dimensions)."""
        dims = [d for d in DIMENSIONS if dims is None or d in dims]
        cols = ", ".join(f"j_{d}, h_{d}" for d in dims)
        marks = ",".join("?" * len(dims))
        rows = self._q(f"SELECT {cols} FROM traces WHERE id IN (SELECT DISTINCT trace_id FROM score_edits"
                       f" WHERE dim IN ({marks}))", list(dims))
        out: dict[str, list[tuple[float, float]]] = {d: [] for d in dims}
        for r in rows:
            for i, d in enumerate(dims):
                judge, human = r[2 * i], r[2 * i + 1]
                if judge is not None and human is not None:
                    out[d].append((judge, human))
        return out
