"""GRPO's reward: nine reward functions, one per dimension, sharing one cached judge call per completion."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from engine.runner.context import StageContext
from engine.dims import DIMENSIONS, weighted_score
from engine.judging.heuristic import heuristic_scores
from engine.text import split_think
Scorer = Callable[[list[dict], str, str], dict[str, float]]


def make_scorer(ctx: StageContext) -> tuple[Scorer, str]:
    """The judge backend from config: the heuristic judge offline, an LLM judge otherwise."""
    llm_cfg = ctx.cfg.judge.llm
    if llm_cfg.backend == "offline":
        return heuristic_scores, "heuristic (offline)"
    from engine.judging.llm_judge import LLMJudge

    from engine.llm import make_limited

    judge = LLMJudge(make_limited(llm_cfg, ctx, ctx.cfg.run.seed), attempts=ctx.cfg.judge.attempts, temperature=llm_cfg.temperature)
    return judge.score, f"{llm_cfg.backend}:{llm_cfg.model}"


def _text(x: Any) -> str:
    if isinstance(x, list):  # conversational: a list of messages
        return "".join(m.get("content", "") for m in x if isinstance(m, dict))
    return str(x)


class JudgeCache:
    """One judge call per (prompt, completion); the nine reward functions read their dimension from it."""

    def __init__(self, scorer: Scorer, ctx: StageContext | None = None, dims: tuple[str, ...] = DIMENSIONS,
                 weights: dict[str, float] | None = None, sample_every: int = 0, samples_per_store: int = 2):
        self.scorer = scorer
        self.ctx = ctx
        self.dims = dims
        self.weights = weights or {}
        self.sample_every = sample_every
        self.samples_per_store = samples_per_store
        self.calls = 0
        self._cache: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()
        self._sampled_steps: set[int] = set()

    def scores(self, prompt: Any, completion: Any) -> dict[str, float]:
        turns = prompt if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
        text = _text(completion)
        key = json.dumps([turns, text], ensure_ascii=False)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        reasoning, answer = split_think(text)
        result = self.scorer(turns, reasoning, answer)
        with self._lock:
            self.calls += 1
            if len(self._cache) > 50_000:
                self._cache.clear()
            self._cache[key] = result
        return result

    def reward_functions(self) -> list[Callable[..., list[float]]]:
        funcs = []
        for i, dim in enumerate(self.dims):
            funcs.append(self._make(dim, first=i == 0))
        return funcs

    def _make(self, dim: str, first: bool) -> Callable[..., list[float]]:
        def reward(prompts: list, completions: list, **kwargs: Any) -> list[float]:
            rows = [self.scores(p, c) for p, c in zip(prompts, completions)]
            if first:
                self._maybe_store_samples(prompts, completions, rows, kwargs.get("trainer_state"))
            return [r[dim] for r in rows]

        reward.__name__ = dim  # TRL logs rewards/<__name__>/mean
        return reward

    def _maybe_store_samples(self, prompts: list, completions: list, rows: list[dict], state: Any) -> None:
        if not self.ctx or not self.sample_every or state is None:
            return
        step = int(state.global_step)
        if step % self.sample_every or step in self._sampled_steps:
            return
        self._sampled_steps.add(step)
        for p, c, r in list(zip(prompts, completions, rows))[: self.samples_per_store]:
            reward = weighted_score(r, {d: self.weights.get(d, 0.0) for d in self.dims})
            last_user = p[-1]["content"] if isinstance(p, list) and p else str(p)
            self.ctx.sample(step, last_user, _text(c), {d: r[d] for d in self.dims}, reward)
