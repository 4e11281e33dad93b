"""Training data read back from a file (`aba export-data`'s train.jsonl or scores.csv, or hand-written), row by row."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

from engine.dims import DIMENSIONS, TIERS
from engine.errors import UserError
from engine.prompts import check_turns, prompt_key
from engine.text import split_think

FORMATS = (".jsonl", ".csv")
MAX_ERRORS_NAMED = 1  # one line on stderr: the first bad row, and how many more there are


class ImportRejected(UserError):
    """A data file with at least one bad row; nothing was imported."""


def read_data_file(path: Path) -> dict[str, list[dict[str, Any]]]:
    """{"prompts": [...], "traces": [...]} ready for RunStore.import_data; every row checked before any is kept."""
    if path.suffix.lower() not in FORMATS:
        raise UserError(f"{path}: --data-from takes a run id, a .jsonl or a .csv file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read the data file ({err})") from None
    rows = _jsonl_rows(text) if path.suffix.lower() == ".jsonl" else _csv_rows(text)
    prompts: dict[str, dict] = {}
    traces: list[dict] = []
    seen: dict[tuple, int] = {}
    errors: list[str] = []
    for line, row in rows:
        try:
            item = _trace(row) if not isinstance(row, str) else None
            if item is None:
                raise ValueError(row)
        except ValueError as err:
            errors.append(f"{path}:{line}: {err}")
            continue
        key = prompt_key(item["category"], item["turns"])
        prompts.setdefault(key, {"key": key, "category": item["category"], "turns": item["turns"], "source": f"import:{path.name}"})
        slot = (key, item["tier"])
        item["idx"] = seen[slot] = seen.get(slot, -1) + 1
        item["prompt_key"] = key
        item["call_key"] = hashlib.sha256(json.dumps(
            ["import", key, item["tier"], item["idx"], item["reasoning"], item["answer"]]).encode()).hexdigest()
        traces.append(item)
    if errors:
        more = f" (and {len(errors) - 1} more bad rows)" if len(errors) > 1 else ""
        raise ImportRejected(f"{errors[0]}{more}; nothing imported")
    if not traces:
        raise ImportRejected(f"{path}: no traces in the file; nothing imported")
    return {"prompts": list(prompts.values()), "traces": traces}


def _jsonl_rows(text: str):
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            yield n, f"invalid JSON at column {err.colno} ({err.msg})"
            continue
        yield n, row if isinstance(row, dict) else "a row must be a JSON object"


def _csv_rows(text: str):
    reader = csv.DictReader(text.splitlines(keepends=True))
    needed = {"category", "tier", "turns", "reasoning", "answer"}
    missing = needed - set(reader.fieldnames or [])
    if missing:
        yield 1, f"the header lacks {', '.join(sorted(missing))} (export with `aba export-data` or add those columns)"
        return
    line = reader.line_num
    for row in reader:
        start, line = line + 1, reader.line_num
        if None in row:
            yield start, "more fields than the header has"
            continue
        out: dict[str, Any] = {k: row[k] for k in ("category", "tier", "reasoning", "answer")}
        try:
            out["turns"] = json.loads(row["turns"]) if row["turns"].lstrip().startswith("[") else [
                {"role": "user", "content": row["turns"]}]
        except json.JSONDecodeError as err:
            yield start, f"turns: invalid JSON ({err.msg})"
            continue
        for side in ("judge", "human"):
            vals = {d: row.get(f"{side}_{d}") for d in DIMENSIONS}
            try:
                out[side] = {d: float(v) for d, v in vals.items() if v not in (None, "")}
            except ValueError as err:
                yield start, f"{side} scores: {err}"
                break
        else:
            out["judge_failed"] = row.get("judge_failed", "0") in ("1", "true", "True")
            out["reviewed"] = row.get("reviewed", "0") in ("1", "true", "True")
            yield start, out


def _trace(row: dict[str, Any]) -> dict[str, Any]:
    """One validated trace; ValueError with the reason otherwise."""
    if "messages" in row:  # export-data's train.jsonl: the prompt turns then the assistant's reply
        msgs = row["messages"]
        if not isinstance(msgs, list) or len(msgs) < 2 or not isinstance(msgs[-1], dict) or msgs[-1].get("role") != "assistant":
            raise ValueError("'messages' must end with the assistant's reply")
        if not isinstance(msgs[-1].get("content"), str):
            raise ValueError("the assistant's content must be a string")
        turns, (reasoning, answer) = msgs[:-1], split_think(msgs[-1]["content"])
    else:
        for key in ("turns", "reasoning", "answer"):
            if key not in row:
                raise ValueError(f"no '{key}' (a row needs 'messages', or 'turns' + 'reasoning' + 'answer')")
        turns, reasoning, answer = row["turns"], row["reasoning"], row["answer"]
    try:
        check_turns(turns, "turns")
    except UserError as err:
        raise ValueError(str(err)) from None
    if not isinstance(reasoning, str) or not isinstance(answer, str):
        raise ValueError("'reasoning' and 'answer' must be strings")
    tier = row.get("tier")
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {', '.join(TIERS)}, got {tier!r}")
    category = row.get("category")
    if not isinstance(category, str) or not category.strip():
        raise ValueError("'category' must be a non-empty string")
    judge = _scores(row.get("judge", row.get("scores")), "judge")
    human = _scores(row.get("human"), "human")
    if judge is not None and len(judge) != len(DIMENSIONS):
        raise ValueError(f"judge scores need all nine dimensions; missing {', '.join(d for d in DIMENSIONS if d not in judge)}")
    failed = bool(row.get("judge_failed", False))
    return {"turns": turns, "reasoning": reasoning, "answer": answer, "tier": tier, "category": category,
            "judge": None if failed else judge, "human": human or {}, "judge_failed": failed,
            "reviewed": bool(row.get("reviewed", False))}


def _scores(value: Any, what: str) -> dict[str, float] | None:
    if value is None or value == {}:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"'{what}' must be an object of dimension scores")
    out = {}
    for dim, v in value.items():
        if dim not in DIMENSIONS:
            raise ValueError(f"{what}: unknown dimension {dim!r}")
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
            raise ValueError(f"{what}.{dim}: a score must be a number within 0..1, got {v!r}")
        out[dim] = float(v)
    return out
