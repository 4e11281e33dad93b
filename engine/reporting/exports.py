"""Exports of a run's traces: TRL conversational JSONL and a scores CSV (both read back by `--data-from FILE`)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from engine.dims import DIMENSIONS
from engine.store import RunStore
from engine.tracefile import assistant_content


def export_training_jsonl(store: RunStore, path: Path, tier: str | None = "chosen", min_score: float | None = None) -> int:
    """Traces as TRL conversational rows: {"messages": [...turns, assistant with <think>]} plus their scores."""
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for t in store.traces(tier=tier, exclude_failed=True):
            if min_score is not None and (t["weighted"] is None or t["weighted"] < min_score):
                continue
            messages = t["turns"] + [{"role": "assistant", "content": assistant_content(t["reasoning"], t["answer"])}]
            # judge and human apart too, so `aba run --data-from train.jsonl` brings the edits back as edits
            fh.write(json.dumps({"messages": messages, "tier": t["tier"], "category": t["category"],
                                 "scores": t["effective"], "weighted": t["weighted"], "judge": t["judge"],
                                 "human": t["human"], "reviewed": t["reviewed"]}, ensure_ascii=False) + "\n")
            n += 1
    return n


def export_scores_csv(store: RunStore, path: Path) -> int:
    rows = store.traces()
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "category", "tier", "weighted", "reviewed", "judge_failed", "rescaled",
                    *[f"judge_{d}" for d in DIMENSIONS], *[f"human_{d}" for d in DIMENSIONS], "turns", "reasoning", "answer"])
        for t in rows:
            judge = t["judge"] or {}
            w.writerow([t["id"], t["category"], t["tier"], t["weighted"], int(t["reviewed"]), int(t["judge_failed"]),
                        int(t["judge_rescaled"]), *[judge.get(d) for d in DIMENSIONS], *[t["human"].get(d) for d in DIMENSIONS],
                        json.dumps(t["turns"], ensure_ascii=False), t["reasoning"], t["answer"]])
    return len(rows)
