"""GRPO prompts held to grpo.max_prompt_length tokens, cut from the left: TRL 1.x's GRPOConfig has no such limit.

The prompt is measured as the model sees it (chat template with the generation prompt). The oldest turns go first
(a leading system message stays); a single turn still too long keeps its last tokens, as TRL's old left truncation
of the prompt did. The end of a prompt, the question being asked now, is never cut.
"""

from __future__ import annotations

from typing import Any


def prompt_tokens(tok: Any, turns: list[dict]) -> int:
    ids = tok.apply_chat_template(turns, add_generation_prompt=True, tokenize=True, return_dict=False)
    return len(ids)


def fit_prompt(tok: Any, turns: list[dict], max_tokens: int) -> list[dict]:
    """`turns` cut from the left to at most `max_tokens` templated tokens (unchanged when they fit)."""
    turns = [dict(t) for t in turns]
    n = prompt_tokens(tok, turns)
    if n <= max_tokens:
        return turns
    keep_system = bool(turns) and turns[0].get("role") == "system"
    while n > max_tokens and len(turns) > 1 + keep_system:
        del turns[1 if keep_system else 0]
        n = prompt_tokens(tok, turns)
    last = turns[-1]
    for _ in range(20):  # decode/re-encode may merge tokens differently: a few rounds converge
        if n <= max_tokens:
            break
        ids = tok(last["content"], add_special_tokens=False)["input_ids"]
        if not ids:
            break  # only the template is left; nothing more to cut
        keep = max(len(ids) - (n - max_tokens), 0)
        last["content"] = tok.decode(ids[len(ids) - keep:]) if keep else ""
        n = prompt_tokens(tok, turns)
    return turns


def fit_prompts(tok: Any, rows: list[dict], max_tokens: int) -> tuple[list[dict], int]:
    """(rows with every prompt fitted, how many were cut)."""
    out, cut = [], 0
    for row in rows:
        fitted = fit_prompt(tok, row["prompt"], max_tokens)
        cut += fitted != row["prompt"]
        out.append({**row, "prompt": fitted})
    return out, cut
