"""Training data from the run database (or the shipped demo traces before any datagen): chat-formatted rows."""

from __future__ import annotations

import json
from pathlib import Path

from engine.dims import DIMENSIONS, weighted_score
from engine.errors import UserError
from engine.jsonl import read_jsonl
from engine.judging.heuristic import heuristic_scores
from engine.store import RunStore

ROOT = Path(__file__).resolve().parents[2]
DEMO_TRACES = ROOT / "data" / "demo" / "traces.jsonl"


def assistant_content(reasoning: str, answer: str) -> str:
    """One assistant turn holding its reasoning in Qwen3's <think> block; the tokenizer's template renders it."""
    return f"<think>\n{reasoning.strip()}\n</think>\n\n{answer.strip()}"


def load_trace_file(path: Path) -> list[dict]:
    """Traces from a JSONL file, each line checked; a bad line is reported with its number and reason."""
    rows = []
    for n, row in read_jsonl(path, "trace file"):
        if not isinstance(row, dict):
            raise UserError(f"{path}:{n}: a trace must be a JSON object")
        for key in ("turns", "tier", "reasoning", "answer"):
            if key not in row:
                raise UserError(f"{path}:{n}: trace has no '{key}'")
        if not isinstance(row["turns"], list) or not all(isinstance(t, dict) and "role" in t and "content" in t for t in row["turns"]):
            raise UserError(f"{path}:{n}: 'turns' must be a list of {{role, content}} messages")
        rows.append(row)
    return rows


def sft_rows(store: RunStore, weights: dict[str, float], min_score: float, log=print) -> list[dict]:
    """Chosen-tier traces whose effective weighted score clears the bar, as prompt/completion conversations."""
    if store.trace_count():
        traces = store.traces(tier="chosen", judged_only=True)
        picked = [t for t in traces if t["weighted"] is not None and t["weighted"] >= min_score]
        log(f"sft data: {len(picked)} of {len(traces)} judged chosen traces clear sft.min_score = {min_score}")
        source = [(t["turns"], t["reasoning"], t["answer"]) for t in picked]
    else:
        rows = [r for r in load_trace_file(DEMO_TRACES) if r["tier"] == "chosen"]
        source = []
        for r in rows:
            s = heuristic_scores(r["turns"], r["reasoning"], r["answer"])
            if (weighted_score(s, weights) or 0.0) >= min_score:
                source.append((r["turns"], r["reasoning"], r["answer"]))
        log(f"sft data: no traces in this run yet; {len(source)} of {len(rows)} shipped demo chosen traces clear the bar")
    return [
        {"prompt": list(turns), "completion": [{"role": "assistant", "content": assistant_content(reasoning, answer)}]}
        for turns, reasoning, answer in source
    ]


def grpo_prompts(store: RunStore) -> list[dict]:
    """Every distinct prompt of the run (or of the demo traces) as a conversational GRPO prompt."""
    if store.prompts():
        prompts = [p["turns"] for p in store.prompts()]
    else:
        seen, prompts = set(), []
        for r in load_trace_file(DEMO_TRACES):
            key = json.dumps(r["turns"])
            if key not in seen:
                seen.add(key)
                prompts.append(r["turns"])
    return [{"prompt": turns} for turns in prompts]


__all__ = ["DIMENSIONS", "assistant_content", "grpo_prompts", "load_trace_file", "sft_rows"]
