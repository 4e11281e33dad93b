"""Generation settings that matter for Qwen3, saved with each answer; live splitting of the <think> block."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from engine.errors import UserError
from engine.text import split_think


@dataclass
class ChatSettings:
    temperature: float = 0.0  # 0 = greedy (the default: same question, same answer)
    top_p: float = 1.0
    max_new_tokens: int = 256
    thinking: bool = True  # Qwen3's chat-template switch (enable_thinking)
    context: int = 0  # tokens of context; 0 = the model's own

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any] | None) -> ChatSettings:
        known = {f.name for f in fields(ChatSettings)}
        unknown = set(d or {}) - known
        if unknown:
            raise UserError(f"chat settings: unknown {', '.join(sorted(unknown))}")
        s = ChatSettings(**(d or {}))
        s.check()
        return s

    def check(self) -> None:
        if not 0 <= self.temperature <= 5:
            raise UserError(f"temperature {self.temperature}: must be between 0 (greedy) and 5")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top-p {self.top_p}: must be in (0, 1]")
        if not 1 <= self.max_new_tokens <= 32768:
            raise UserError(f"max new tokens {self.max_new_tokens}: must be between 1 and 32768")
        if self.context and self.context <= self.max_new_tokens:
            raise UserError(f"context {self.context}: must exceed max new tokens ({self.max_new_tokens})")

    def short(self) -> str:
        how = "greedy" if self.greedy else f"T={self.temperature:g} top-p={self.top_p:g}"
        return f"{how}, max {self.max_new_tokens} new, thinking {'on' if self.thinking else 'off'}"


def split_live(text: str) -> tuple[str, str, bool]:
    """(reasoning, answer, thinking still open) of a completion as it streams: an opened <think> block with no
    close yet is all reasoning; a partial tag at the very start is held back rather than shown as answer."""
    stripped = text.lstrip()
    if "</think>" not in text and stripped and "<think>".startswith(stripped[:7]) and len(stripped) < 7:
        return "", "", True
    reasoning, answer = split_think(text)
    open_ = "<think>" in text and "</think>" not in text
    return reasoning, answer, open_


def cut_left(ids: list[int], budget: int) -> tuple[list[int], str]:
    """The prompt's last `budget` tokens, and a note when some were cut."""
    if len(ids) <= budget:
        return ids, ""
    return ids[-budget:], f"prompt cut from the left: kept the last {budget} of {len(ids)} tokens (context limit)"
