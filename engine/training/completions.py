"""Every completion of a sampled GRPO step (nine scores, reward, advantage, length, clipped) into the run database.

TRL's GRPOTrainer assembles this table for `log_completions` in `trainer._logs` whether or not that flag is on
(prompt, completion, one column per reward function, the advantage, and extra columns reward functions add through
`log_extra`). We read it at each sampled step's log, so the advantages are TRL's own, not recomputed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback

from engine.runner.context import StageContext


def with_lengths(reward: Callable[..., list[float]]) -> Callable[..., list[float]]:
    """Wrap one reward function so it also logs each completion's token length into TRL's completions table."""

    def wrapped(prompts: list, completions: list, **kwargs: Any) -> list[float]:
        log_extra, ids = kwargs.get("log_extra"), kwargs.get("completion_ids")
        if callable(log_extra) and ids is not None:
            log_extra("length", [len(x) for x in ids])
        return reward(prompts, completions, **kwargs)

    wrapped.__name__ = reward.__name__  # TRL names the reward column after it
    return wrapped


def _text(x: Any) -> str:
    if isinstance(x, list):
        return "".join(m.get("content", "") for m in x if isinstance(m, dict))
    return str(x)


def _last_user(prompt: Any) -> str:
    if isinstance(prompt, list):
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return users[-1] if users else _text(prompt)
    return str(prompt)


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def completion_rows(logs: dict[str, Any], dims: tuple[str, ...], weights: dict[str, float], num_generations: int,
                    max_completion_length: int) -> list[dict[str, Any]]:
    """One row per completion of the latest generation batch, grouped as TRL groups them (num_generations in a row)."""
    prompts, completions = list(logs.get("prompt", [])), list(logs.get("completion", []))
    rewards = {name: list(col) for name, col in logs.get("rewards", {}).items()}
    advantages = list(logs.get("advantages", []))
    lengths = list(logs.get("extra", {}).get("length", []))
    total_w = sum(weights.get(d, 0.0) for d in dims) or 1.0
    rows = []
    for i, (p, c) in enumerate(zip(prompts, completions)):
        scores = {d: _num(rewards[d][i]) if d in rewards and i < len(rewards[d]) else None for d in dims}
        parts = [(weights.get(d, 0.0), s) for d, s in scores.items() if s is not None]
        length = int(lengths[i]) if i < len(lengths) and _num(lengths[i]) is not None else None
        rows.append({
            "group": i // max(num_generations, 1), "index": i % max(num_generations, 1),
            "prompt": _last_user(p), "completion": _text(c), "scores": scores,
            # TRL's reward: nansum of weighted scores (weights normalised), so a failed dimension counts as absent.
            "reward": sum(w * s for w, s in parts) / total_w if parts else None,
            "advantage": _num(advantages[i]) if i < len(advantages) else None,
            "length": length,
            "clipped": None if length is None else length >= max_completion_length,
        })
    return rows


class CompletionsRecorder(TrainerCallback):
    """At each sampled step (the first, then every `every`), stores the step's completions as a `completions` result."""

    def __init__(self, ctx: StageContext, dims: tuple[str, ...], weights: dict[str, float], every: int, prefix: str = ""):
        self.ctx = ctx
        self.dims = dims
        self.weights = weights
        self.every = every
        self.prefix = prefix
        self.trainer: Any = None  # set once the trainer exists (it is built after the callbacks)
        self._warned = False

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs: Any):
        step = int(state.global_step)
        if self.trainer is None or not self.ctx.primary or not self.every or (step != 1 and step % self.every):
            return
        table = getattr(self.trainer, "_logs", None)
        if not isinstance(table, dict) or "completion" not in table:
            if not self._warned:
                self._warned = True
                self.ctx.log("this TRL version keeps no completions table: completions are not stored", "warn")
            return
        top = int(getattr(self.trainer, "max_completion_length", 0) or args.max_completion_length)
        rows = completion_rows(table, self.dims, self.weights, int(self.trainer.num_generations), top)
        if rows:
            self.ctx.result("completions", f"{self.prefix}{step:07d}", {
                "step": step, "num_generations": int(self.trainer.num_generations), "max_completion_length": top,
                "rows": rows,
            })
