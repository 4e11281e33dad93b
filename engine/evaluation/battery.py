"""The test battery: loading data/battery.toml strictly, and checking one model output against a test."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from engine.dims import DIMENSIONS
from engine.errors import UserError
from engine.text import split_think
KINDS = ("patterns", "judge", "think")
REFUSAL = re.compile(
    r"\b(i can(?:'|no)t help|i cannot help|i won'?t (?:help|do that)|i'm sorry,? but i can(?:'|no)t|as an ai\b|"
    r"i (?:am|'m) (?:not able|unable) to (?:help|assist)|i must decline)",
    re.I,
)


@dataclass(frozen=True)
class Test:
    id: str
    title: str
    prompt: str
    kind: str
    must: list[str] = field(default_factory=list)
    must_not: list[str] = field(default_factory=list)
    dimension: str = ""
    threshold: float = 0.5


def _test_lines(text: str) -> list[int]:
    return [i + 1 for i, line in enumerate(text.splitlines()) if line.strip() == "[[test]]"]


def load_battery(path: Path) -> list[Test]:
    """Every test checked; an error names the file, the line of its [[test]] and the reason."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise UserError(f"{path}: cannot read battery ({err})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(err))
        where = f"{m.group(1)}:{m.group(2)}" if m else "?"
        raise UserError(f"{path}:{where}: TOML syntax error: {str(err).split(' (at')[0]}") from None
    lines = _test_lines(text)
    tests: list[Test] = []
    for i, row in enumerate(data.get("test", [])):
        where = f"{path}:{lines[i] if i < len(lines) else '?'}"
        unknown = set(row) - {"id", "title", "prompt", "kind", "must", "must_not", "dimension", "threshold"}
        if unknown:
            raise UserError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        for key in ("id", "prompt", "kind"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise UserError(f"{where}: test needs a non-empty string '{key}'")
        if row["kind"] not in KINDS:
            raise UserError(f"{where}: kind {row['kind']!r} is not one of {', '.join(KINDS)}")
        if row["kind"] == "patterns":
            if not row.get("must") and not row.get("must_not"):
                raise UserError(f"{where}: a patterns test needs 'must' or 'must_not'")
            for pat in row.get("must", []) + row.get("must_not", []):
                try:
                    re.compile(pat)
                except re.error as err:
                    raise UserError(f"{where}: bad regex {pat!r} ({err})") from None
        if row["kind"] == "judge":
            if row.get("dimension") not in DIMENSIONS:
                raise UserError(f"{where}: judge test needs 'dimension', one of the nine ({row.get('dimension')!r})")
            th = row.get("threshold", 0.5)
            if not isinstance(th, (int, float)) or not 0 <= th <= 1:
                raise UserError(f"{where}: threshold must be within 0..1, got {th!r}")
        if any(t.id == row["id"] for t in tests):
            raise UserError(f"{where}: duplicate test id {row['id']!r}")
        tests.append(Test(row["id"], row.get("title", row["id"]), row["prompt"], row["kind"], list(row.get("must", [])),
                          list(row.get("must_not", [])), row.get("dimension", ""), float(row.get("threshold", 0.5))))
    if not tests:
        raise UserError(f"{path}: no [[test]] entries")
    return tests


def well_formed_think(output: str) -> bool:
    """One <think> block, closed, with reasoning inside and an answer after it."""
    m = re.match(r"\s*<think>(.*?)</think>(.*)", output, re.S)
    return bool(m and m.group(1).strip() and m.group(2).strip() and "<think>" not in m.group(2))


def is_refusal(output: str) -> bool:
    """The refusal detector: stock refusal phrases in the answer (not the reasoning)."""
    return bool(REFUSAL.search(split_think(output)[1]))


def check(test: Test, output: str, judge_scores: dict[str, float] | None = None) -> tuple[bool, str]:
    """(passed, detail). Patterns read the answer after the think block."""
    answer = split_think(output)[1]
    if test.kind == "think":
        ok = well_formed_think(output)
        return ok, "well-formed <think> block and an answer" if ok else "no well-formed <think> block"
    if test.kind == "patterns":
        missing = [p for p in test.must if not re.search(p, answer, re.I | re.M)]
        present = [p for p in test.must_not if re.search(p, answer, re.I | re.M)]
        ok = not missing and not present
        detail = "all patterns as required" if ok else "; ".join(
            [f"missing /{p}/" for p in missing] + [f"forbidden /{p}/ present" for p in present])
        return ok, detail
    score = (judge_scores or {}).get(test.dimension)
    if score is None:
        return False, f"no judge score for {test.dimension}"
    return score >= test.threshold, f"{test.dimension} {score:.2f} vs threshold {test.threshold:.2f}"
