"""The strict judge-reply parser: nine scores in [0, 1] from a reply, repaired where safe, else a clear error."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from engine.dims import DIMENSIONS


class JudgeReplyError(ValueError):
    """A judge reply that cannot be turned into nine scores; the message says why."""


@dataclass
class ParsedScores:
    scores: dict[str, float]
    repaired: list[str]  # what was fixed: "code fence", "prose around JSON", "rescaled 0-10", ...

    @property
    def rescaled(self) -> bool:
        return any(r.startswith("rescaled") for r in self.repaired)


_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)


def _first_json_object(text: str) -> tuple[str, bool]:
    """The first balanced {...} in text; True when there was text around it."""
    start = text.find("{")
    if start < 0:
        raise JudgeReplyError("no JSON object in the reply")
    depth, in_str, esc = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                obj = text[start : i + 1]
                return obj, bool(text[:start].strip() or text[i + 1 :].strip())
    raise JudgeReplyError("unterminated JSON object in the reply")


def parse_judge_reply(text: str | None) -> ParsedScores:
    """Nine scores in 0..1 from a judge reply, repairing common faults; JudgeReplyError otherwise. Never fills a 0."""
    if text is None or not text.strip():
        raise JudgeReplyError("empty reply")
    repaired: list[str] = []
    body = text.strip()
    fence = _FENCE.search(body)
    if fence:
        body = fence.group(1).strip()
        repaired.append("code fence")
    obj_text, had_prose = _first_json_object(body)
    if had_prose:
        repaired.append("prose around JSON")
    try:
        data = json.loads(obj_text)
    except json.JSONDecodeError:
        # Trailing commas and single quotes are the usual slips.
        fixed = re.sub(r",\s*([}\]])", r"\1", obj_text).replace("'", '"')
        try:
            data = json.loads(fixed)
        except json.JSONDecodeError as err:
            raise JudgeReplyError(f"invalid JSON ({err.msg} at char {err.pos})") from None
        repaired.append("JSON syntax")
    if not isinstance(data, dict):
        raise JudgeReplyError("the JSON is not an object")
    if isinstance(data.get("scores"), dict):
        data = data["scores"]
        repaired.append("nested under 'scores'")
    norm = {str(k).strip().lower().replace(" ", "_").replace("-", "_"): v for k, v in data.items()}
    missing = [d for d in DIMENSIONS if d not in norm]
    if missing:
        raise JudgeReplyError(f"missing dimension(s): {', '.join(missing)}")
    values: dict[str, float] = {}
    for d in DIMENSIONS:
        v = norm[d]
        if isinstance(v, str):
            try:
                v = float(v.strip().rstrip("%"))
            except ValueError:
                raise JudgeReplyError(f"{d}: not a number ({v!r})") from None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
            raise JudgeReplyError(f"{d}: not a number ({v!r})")
        values[d] = float(v)
    top = max(values.values())
    if min(values.values()) < 0:
        raise JudgeReplyError(f"negative score ({min(values, key=values.get)} = {min(values.values())})")
    if top > 1.0:
        scale = 10.0 if top <= 10.0 else 100.0 if top <= 100.0 else None
        if scale is None:
            raise JudgeReplyError(f"score out of range ({max(values, key=values.get)} = {top})")
        values = {d: v / scale for d, v in values.items()}
        repaired.append(f"rescaled 0-{int(scale)}")
    return ParsedScores(values, repaired)
