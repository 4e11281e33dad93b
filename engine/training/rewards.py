"""GRPO's reward: nine reward functions, one per dimension, sharing one concurrent judge pass per generation batch."""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from engine.context import StageContext
from engine.dims import DIMENSIONS, weighted_score
from engine.judging.factory import Scorer
from engine.text import split_think


def _text(x: Any) -> str:
    if isinstance(x, list):  # conversational: a list of messages
        return "".join(m.get("content", "") for m in x if isinstance(m, dict))
    return str(x)


def failed(row: dict[str, float | None]) -> bool:
    return any(v is None for v in row.values())


@dataclass
class JudgeStats:
    """Running totals; the step callback turns their differences into per-step judge/* metrics."""

    completions: int = 0  # completions scored (every row of every batch)
    calls: int = 0  # judge calls made: one per distinct completion not in the cache
    cache_hits: int = 0  # completions that needed no call (cached earlier, or a repeat within the batch)
    failures: int = 0  # calls that failed after their retries
    unscored: int = 0  # completions left without a reward (their call failed)
    wall_s: float = 0.0  # wall time spent in judge passes
    peak_in_flight: int = 0  # most scorer calls running at once

    def copy(self) -> JudgeStats:
        return JudgeStats(**self.__dict__)


class JudgeCache:
    """One judge call per distinct (prompt, completion), all of a batch's calls at once; the nine reward functions
    read their dimension from the batch's shared rows. A failed call is never cached, so a later step asks again."""

    def __init__(self, scorer: Scorer, ctx: StageContext | None = None, dims: tuple[str, ...] = DIMENSIONS,
                 weights: dict[str, float] | None = None, sample_every: int = 0, samples_per_store: int = 2,
                 concurrency: int = 8, max_entries: int = 4096):
        self.scorer = scorer
        self.ctx = ctx
        self.dims = dims
        self.weights = weights or {}
        self.sample_every = sample_every
        self.samples_per_store = samples_per_store
        self.concurrency = max(1, concurrency)
        self.max_entries = max_entries
        self.stats = JudgeStats()
        self._cache: OrderedDict[str, dict[str, float | None]] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()
        self._in_flight = 0
        self._batch: tuple[tuple[str, ...], list[dict]] | None = None  # the last batch's keys and rows
        self._batch_lock = threading.Lock()
        self._sampled_steps: set[int] = set()

    @property
    def calls(self) -> int:
        return self.stats.calls

    # -- scoring ---------------------------------------------------------------------------

    @staticmethod
    def _key(prompt: Any, completion: Any) -> tuple[str, list[dict], str]:
        turns = prompt if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
        text = _text(completion)
        return json.dumps([turns, text], ensure_ascii=False), turns, text

    def _score_one(self, turns: list[dict], text: str) -> dict[str, float | None]:
        with self._lock:
            self._in_flight += 1
            self.stats.peak_in_flight = max(self.stats.peak_in_flight, self._in_flight)
        try:
            return self.scorer(turns, *split_think(text))
        finally:
            with self._lock:
                self._in_flight -= 1

    def score_batch(self, prompts: list, completions: list) -> list[dict[str, float | None]]:
        """The nine scores for every completion: cache hits first, then every distinct miss concurrently."""
        start = time.perf_counter()
        items = [self._key(p, c) for p, c in zip(prompts, completions)]
        rows: list[dict | None] = [None] * len(items)
        todo: dict[str, list[int]] = {}
        hits = 0
        with self._lock:
            for i, (key, _, _) in enumerate(items):
                cached = self._cache.get(key)
                if cached is not None:
                    self._cache.move_to_end(key)
                    rows[i] = cached
                    hits += 1
                elif key in todo:
                    todo[key].append(i)
                    hits += 1
                else:
                    todo[key] = [i]
        misses = [(key, items[idx[0]][1], items[idx[0]][2]) for key, idx in todo.items()]
        if len(misses) == 1 or self.concurrency == 1:
            results = [self._score_one(turns, text) for _, turns, text in misses]
        else:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(misses)), thread_name_prefix="judge") as pool:
                results = list(pool.map(lambda m: self._score_one(m[1], m[2]), misses))
        failures = 0
        with self._lock:
            for (key, _, _), result in zip(misses, results):
                for i in todo[key]:
                    rows[i] = result
                if failed(result):
                    failures += 1
                    continue
                self._cache[key] = result
                if len(self._cache) > self.max_entries:
                    self._cache.popitem(last=False)
            s = self.stats
            s.completions += len(items)
            s.calls += len(misses)
            s.cache_hits += hits
            s.failures += failures
            s.unscored += sum(1 for r in rows if r is not None and failed(r))
            s.wall_s += time.perf_counter() - start
        return rows  # type: ignore[return-value]

    def rows(self, prompts: list, completions: list) -> list[dict[str, float | None]]:
        """The batch's rows, computed once: TRL calls the nine reward functions one after another on the same batch."""
        keys = tuple(self._key(p, c)[0] for p, c in zip(prompts, completions))
        with self._batch_lock:
            if self._batch is not None and self._batch[0] == keys:
                return self._batch[1]
            rows = self.score_batch(prompts, completions)
            self._batch = (keys, rows)
            return rows

    def scores(self, prompt: Any, completion: Any) -> dict[str, float | None]:
        return self.score_batch([prompt], [completion])[0]

    # -- TRL reward functions ----------------------------------------------------------------

    def reward_functions(self) -> list[Callable[..., list[float | None]]]:
        return [self._make(dim, first=i == 0) for i, dim in enumerate(self.dims)]

    def _make(self, dim: str, first: bool) -> Callable[..., list[float | None]]:
        def reward(prompts: list, completions: list, **kwargs: Any) -> list[float | None]:
            rows = self.rows(prompts, completions)
            if first:
                self._maybe_store_samples(prompts, completions, rows, kwargs.get("trainer_state"))
            # A failed judge gives None in all nine functions. In TRL 1.15 (trainer/grpo_trainer.py) None becomes NaN
            # ("Convert None values to NaN", l. 1588), and a row that is NaN in every function is marked unscorable
            # (unscorable_mask, l. 2685): its summed reward, which nansum alone would make 0, is set back to NaN
            # (l. 2690); the group mean and std are nanmean/nanstd over the scored rows only (l. 2691, 2696); and
            # nan_to_num gives it advantage 0 (l. 2736). A group with fewer than two scored rows has nanstd NaN
            # (trainer/utils.py l. 1044), so all its advantages are 0: it contributes nothing. Such rows still count
            # in the loss's token normaliser and in the beta * KL term, which only holds them near the reference.
            return [r[dim] for r in rows]

        reward.__name__ = dim  # TRL logs rewards/<__name__>/mean
        return reward

    def _maybe_store_samples(self, prompts: list, completions: list, rows: list[dict], state: Any) -> None:
        if not self.ctx or not self.sample_every or state is None:
            return
        # The step these completions train: TRL logs it as global_step once the optimizer step ends (the completions
        # drill-down and the metrics use that number), while rewards are computed before, at global_step - 1.
        step = int(state.global_step) + 1
        if (step != 1 and step % self.sample_every) or step in self._sampled_steps:
            return
        self._sampled_steps.add(step)
        for p, c, r in list(zip(prompts, completions, rows))[: self.samples_per_store]:
            reward = weighted_score(r, {d: self.weights.get(d, 0.0) for d in self.dims})
            last_user = p[-1]["content"] if isinstance(p, list) and p else str(p)
            self.ctx.sample(step, last_user, _text(c), {d: r[d] for d in self.dims}, reward)
