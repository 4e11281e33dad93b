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

    def edit_score(self, trace_id: int, dim: str, value: float | None, weights: dict[str, float] | None = None) -> bool:
        """Set (or with None, clear back to the judge's) the human score of one dimension; history is kept.
        False (and nothing recorded) when the score already is `value`."""
        if dim not in DIMENSIONS:
            raise StoreError(f"unknown dimension {dim!r}")
        if value is not None and not 0.0 <= value <= 1.0:
            raise StoreError(f"{dim}: score must be within 0..1, got {value}")
        with self._tx() as c:
            return self._edit(c, trace_id, dim, value, weights)

    def nudge_score(self, trace_id: int, dim: str, delta: float, weights: dict[str, float] | None = None
                    ) -> tuple[float, float] | None:
        """Move the effective score (the human's, else the judge's) by `delta` within 0..1, read and written in one
        transaction, so nudges typed faster than the panel redraws each build on the last. (old, new), or None
        when nothing changed (already at the bound, or no score to move) and nothing was recorded."""
        if dim not in DIMENSIONS:
            raise StoreError(f"unknown dimension {dim!r}")
        with self._tx() as c:
            row = c.execute(f"SELECT COALESCE(h_{dim}, j_{dim}) FROM traces WHERE id = ?", (trace_id,)).fetchone()
            if row is None:
                raise StoreError(f"no trace {trace_id}")
            if row[0] is None:
                return None
            new = round(min(1.0, max(0.0, row[0] + delta)), 4)
            if abs(new - row[0]) < 1e-9:
                return None
            return (row[0], new) if self._edit(c, trace_id, dim, new, weights) else None

    def _edit(self, c, trace_id: int, dim: str, value: float | None, weights: dict[str, float] | None) -> bool:
        row = c.execute(f"SELECT h_{dim} FROM traces WHERE id = ?", (trace_id,)).fetchone()
        if row is None:
            raise StoreError(f"no trace {trace_id}")
        old = row[0]
        if old == value or (old is not None and value is not None and abs(old - value) < 1e-9):
            return False  # an edit that changes nothing is not an edit (and agreement must not count it)
        c.execute("INSERT INTO score_edits (trace_id, dim, old, new, time) VALUES (?, ?, ?, ?, ?)",
                  (trace_id, dim, old, value, time.time()))
        c.execute(f"UPDATE traces SET h_{dim} = ? WHERE id = ?", (value, trace_id))
        self._reweigh(c, trace_id, weights)
        return True

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

    def review_signature(self) -> tuple:
        """Changes whenever traces arrive, the judge scores, or anyone edits, undoes or marks a trace reviewed: a
        panel compares it each poll to see other panels' and processes' edits."""
        edits = self._q("SELECT COALESCE(MAX(id), 0), COALESCE(SUM(undone), 0) FROM score_edits")[0]
        traces = self._q("SELECT COUNT(*), COALESCE(SUM(reviewed), 0), COALESCE(SUM(judged), 0) FROM traces")[0]
        return (*edits, *traces)

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
