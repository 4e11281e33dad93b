"""The run's judge from its config, set up in one place for every user: the nine-score scorer (judge stage, GRPO
rewards, eval, audit) and the pairwise judge (eval's tournament, the audit's position test).

Offline, the heuristic judge scores; the offline LLM backend is handed it (`offline_judge`) and knows no judge itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import IntEnum
from typing import Any

from engine.config.sections import LLMBackendName
from engine.judging.heuristic import heuristic_pairwise, heuristic_scores
from engine.text import split_think

Scorer = Callable[[list[dict], str, str], dict[str, float | None]]
Pairwise = Callable[[list[dict], str, str], "str | None"]  # 'A' (first better), 'B', 'tie'; None: no verdict


class JitterSeed(IntEnum):
    """Offsets added to run.seed for each judge client's retry-jitter RNG (LimitedBackend), one per use. They drive
    only the backoff jitter of retried calls, never a score; distinct offsets keep two clients' retries apart."""

    REWARD = 0  # the GRPO reward judge (and the scorer eval and the audit share)
    JUDGE_STAGE = 1  # the judge stage's pass over every trace
    EVAL_PAIRWISE = 2  # eval's tournament
    AUDIT_PAIRWISE = 3  # the judge audit's position test
    CONSISTENCY = 4  # the commitment sweep's yes/no consistency judge (was +3 too, see stages/commitment.py)


def offline_judge_reply(turns: list[dict], reasoning: str, answer: str) -> str:
    """What the offline backend answers to a judge request: the heuristic judge's nine scores as JSON."""
    return json.dumps(heuristic_scores(turns, reasoning, answer))


def judge_backend(ctx: Any, use: JitterSeed):
    """The judge's rate-limited LLM client (`judge.llm`); offline it answers judge requests with the heuristic."""
    from engine.llm import make_limited

    return make_limited(ctx.cfg.judge.llm, ctx, ctx.cfg.run.seed + use, offline_judge=offline_judge_reply)


def is_offline(ctx: Any) -> bool:
    return ctx.cfg.judge.llm.backend == LLMBackendName.OFFLINE


def make_scorer(ctx: Any) -> tuple[Scorer, str]:
    """The judge backend from config: the heuristic judge offline, an LLM judge otherwise; and its name."""
    llm_cfg = ctx.cfg.judge.llm
    if is_offline(ctx):
        return heuristic_scores, "heuristic (offline)"
    from engine.judging.llm_judge import LLMJudge

    judge = LLMJudge(judge_backend(ctx, JitterSeed.REWARD), attempts=ctx.cfg.judge.attempts,
                     temperature=llm_cfg.temperature)
    return judge.score, f"{llm_cfg.backend}:{llm_cfg.model}"


def judge_concurrency(ctx: Any) -> int:
    """Judge calls one batch may have in flight: the backend's cap; 1 for the heuristic judge (no waiting to overlap)."""
    return 1 if is_offline(ctx) else ctx.cfg.judge.llm.concurrency


def make_pairwise(ctx: Any, scorer: Scorer, use: JitterSeed) -> tuple[Pairwise, int]:
    """The pairwise judge and how many verdicts may run at once: offline, the heuristic's weighted scores compared
    (`scorer` is the heuristic); otherwise the LLM judge asked which answer is better (reasoning stripped)."""
    if is_offline(ctx):
        return heuristic_pairwise(scorer, ctx.cfg.grpo.reward_weights), 1
    from engine.judging.llm_judge import pairwise_llm

    limited = judge_backend(ctx, use)
    return (lambda turns, a, b: pairwise_llm(limited, turns, split_think(a)[1], split_think(b)[1])), limited.concurrency
