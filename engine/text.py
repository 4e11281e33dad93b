"""Text helpers shared by every wing: splitting a completion's <think> block from its answer."""

from __future__ import annotations


def split_think(text: str) -> tuple[str, str]:
    """(reasoning, answer) from a completion that may hold a <think> block."""
    if "</think>" in text:
        head, _, tail = text.partition("</think>")
        return head.split("<think>")[-1].strip(), tail.strip()
    if "<think>" in text:
        return text.split("<think>", 1)[1].strip(), ""
    return "", text.strip()
