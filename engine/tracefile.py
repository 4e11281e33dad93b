"""The trace file format: the shipped demo traces, a checked JSONL reader, and a trace as one assistant turn.

Foundation: the offline LLM backend, the demo model's warm-up, training data and exports all read traces this way.
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import UserError
from engine.jsonl import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
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
