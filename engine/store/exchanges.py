"""The playground's kept exchanges: each model's answer to a prompt, its settings, timings and judge scores."""

from __future__ import annotations

import json
import time
from typing import Any

from engine.store.db import clean_number as _clean

_COLS = ("id", "turn", "parent", "time", "model", "model_source", "prompt", "history", "settings", "answer",
         "reasoning", "status", "error", "note", "judge", "scores", "weighted", "judge_error", "prompt_tokens",
         "new_tokens", "ttft_s", "tokens_per_s", "total_s", "promoted")
_JSON = ("history", "settings", "scores")
PROMOTIONS = ("heldout", "battery")


class ExchangesMixin:
    def next_turn(self) -> int:
        rows = self._q("SELECT COALESCE(MAX(turn), 0) + 1 FROM exchanges")
        return int(rows[0][0])

    def add_exchange(self, row: dict[str, Any]) -> int:
        """One answer kept, in one transaction; returns its id. Unknown keys are a bug, not silently dropped."""
        unknown = set(row) - set(_COLS)
        if unknown:
            raise KeyError(f"exchanges has no column(s) {sorted(unknown)}")
        values = {k: row.get(k) for k in _COLS if k != "id"}
        values["time"] = values["time"] or time.time()
        for key in _JSON:
            if values[key] is not None:
                values[key] = json.dumps(values[key], ensure_ascii=False)
        for key in ("weighted", "ttft_s", "tokens_per_s", "total_s"):
            values[key] = _clean(values[key])
        names = ", ".join(values)
        with self._tx() as c:
            cur = c.execute(f"INSERT INTO exchanges ({names}) VALUES ({', '.join('?' * len(values))})",
                            tuple(values.values()))
            return int(cur.lastrowid)

    def exchanges(self, limit: int = 200, turn: int | None = None) -> list[dict[str, Any]]:
        """The newest `limit` answers, oldest first (or every answer of one turn)."""
        cols = ", ".join(_COLS)
        if turn is not None:
            rows = self._q(f"SELECT {cols} FROM exchanges WHERE turn = ? ORDER BY id", (turn,))
        else:
            rows = self._q(f"SELECT {cols} FROM (SELECT {cols} FROM exchanges ORDER BY id DESC LIMIT ?) ORDER BY id",
                           (limit,))
        out = []
        for r in rows:
            d = dict(zip(_COLS, r))
            for key in _JSON:
                d[key] = json.loads(d[key]) if d[key] else None
            out.append(d)
        return out

    def promote_turn(self, turn: int, kind: str) -> int:
        """Mark a turn's prompt as a held-out prompt or a battery test (eval picks them up); returns rows marked."""
        if kind not in PROMOTIONS:
            raise ValueError(f"promotion {kind!r} is not one of {PROMOTIONS}")
        with self._tx() as c:
            return c.execute("UPDATE exchanges SET promoted = ? WHERE turn = ?", (kind, turn)).rowcount

    def promoted_prompts(self, kind: str) -> list[dict[str, Any]]:
        """One entry per promoted turn: its conversation up to the prompt, in the order they were promoted."""
        rows = self._q("SELECT turn, MIN(id), prompt, history FROM exchanges WHERE promoted = ? GROUP BY turn "
                       "ORDER BY turn", (kind,))
        return [{"turn": r[0], "id": r[1], "prompt": r[2], "history": json.loads(r[3]) if r[3] else []} for r in rows]
