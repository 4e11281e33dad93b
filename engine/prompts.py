"""Prompt sets: loading the hand-written categories, and dropping duplicates and near-duplicates."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from engine.errors import UserError
from engine.jsonl import read_jsonl


@dataclass(frozen=True)
class Prompt:
    key: str
    category: str
    turns: list[dict]
    source: str


def prompt_key(category: str, turns: list[dict]) -> str:
    return hashlib.sha256(json.dumps([category, turns], sort_keys=True).encode()).hexdigest()[:20]


def check_turns(turns: object, where: str) -> list[dict]:
    if not isinstance(turns, list) or not turns:
        raise UserError(f"{where}: 'turns' must be a non-empty list of messages")
    for i, t in enumerate(turns):
        if not isinstance(t, dict) or t.get("role") not in ("user", "assistant") or not isinstance(t.get("content"), str):
            raise UserError(f"{where}: turn {i} must be {{\"role\": \"user\"|\"assistant\", \"content\": str}}")
    if turns[-1]["role"] != "user":
        raise UserError(f"{where}: the last turn must be the user's")
    return turns


def load_category(path: Path, category: str, max_chars: int = 0, long: str = "refuse",
                  warn=None) -> list[Prompt]:
    """The prompts of one file, each checked. A prompt longer than `max_chars` (0: no limit) is refused with its
    file:line, or with long='cut' keeps its last `max_chars` characters (`warn(line)` is told of each cut)."""
    out = []
    for n, row in read_jsonl(path, "prompts"):
        turns = check_turns(row.get("turns") if isinstance(row, dict) else None, f"{path}:{n}")
        size = sum(len(t["content"]) for t in turns)
        if max_chars and size > max_chars:
            if long != "cut":
                raise UserError(f"{path}:{n}: prompt of {size:,} characters is longer than datagen.max_prompt_chars"
                                f" ({max_chars:,}); shorten it, raise the limit, or set datagen.long_prompts = \"cut\"")
            turns = cut_turns(turns, max_chars)
            if warn is not None:
                warn(f"{path}:{n}: prompt of {size:,} characters cut to its last {max_chars:,}"
                     " (datagen.long_prompts = \"cut\")")
        out.append(Prompt(prompt_key(category, turns), category, turns, f"file:{path.name}"))
    return out


def cut_turns(turns: list[dict], max_chars: int) -> list[dict]:
    """At most `max_chars` characters of a conversation: the end of the last (user) turn, then whole earlier turns
    while they fit; it still starts with a user turn."""
    last = turns[-1]
    kept = [{**last, "content": last["content"][-max_chars:]}]
    left = max_chars - len(kept[0]["content"])
    for t in reversed(turns[:-1]):
        if len(t["content"]) > left:
            break
        kept.insert(0, t)
        left -= len(t["content"])
    while kept[0]["role"] != "user":
        kept.pop(0)
    return kept


def load_prompts(folder: Path, categories: list[str], max_chars: int = 0, long: str = "refuse",
                 warn=None) -> dict[str, list[Prompt]]:
    if not folder.is_dir():
        raise UserError(f"datagen.prompts_dir: {folder} is not a folder")
    out = {}
    for cat in categories:
        path = folder / f"{cat}.jsonl"
        if not path.exists():
            raise UserError(f"datagen.category_targets.{cat}: no prompt file {path}")
        out[cat] = load_category(path, cat, max_chars, long, warn)
    return out


def _shingles(text: str, n: int = 3) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9']+", text.lower())
    if len(words) < n:
        return {tuple(words)}
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def text_of(turns: list[dict]) -> str:
    return " ".join(t["content"] for t in turns)


class NearDuplicateFilter:
    """Exact duplicates after normalising case and spacing, and near-duplicates by word-trigram Jaccard."""

    def __init__(self, threshold: float = 0.6):
        self.threshold = threshold
        self._exact: set[str] = set()
        self._shingles: list[set] = []

    def add(self, turns: list[dict]) -> bool:
        """True when the prompt is new (and remember it), False for a (near-)duplicate."""
        text = text_of(turns)
        norm = " ".join(re.findall(r"[a-z0-9']+", text.lower()))
        if norm in self._exact:
            return False
        sh = _shingles(text)
        for other in self._shingles:
            inter = len(sh & other)
            if inter and inter / len(sh | other) >= self.threshold:
                return False
        self._exact.add(norm)
        self._shingles.append(sh)
        return True
