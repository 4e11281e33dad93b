"""Each playground answer judged by the run's own judge (the GRPO reward's): nine scores and the weighted total."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from engine.config import Config
from engine.dims import DIMENSIONS, weighted_score


@dataclass
class Verdict:
    scores: dict[str, float | None] | None  # None when the judge failed
    weighted: float | None
    error: str  # why the judge failed; "" when it did not


class AnswerJudge:
    """The run's judge from its config, with the backend's limits and retries (the project's own factory)."""

    def __init__(self, cfg: Config, run_dir: Path, log=print):
        from engine.judging.factory import make_scorer

        self.weights = cfg.grpo.reward_weights
        # The factory reads the config and, for a local judge on the demo model, the run folder.
        ctx = SimpleNamespace(cfg=cfg, run_dir=run_dir, log=lambda m, level="info": log(m),
                              progress=lambda *a, **k: None)
        self.scorer, self.label = make_scorer(ctx)

    def __call__(self, turns: list[dict], reasoning: str, answer: str) -> Verdict:
        from engine.judging.llm_judge import JudgeFailed, LLMJudge

        owner: Any = getattr(self.scorer, "__self__", None)
        try:
            if isinstance(owner, LLMJudge):  # judge() says why it failed; score() only gives Nones
                scores = owner.judge(turns, reasoning, answer).parsed.scores
            else:
                scores = self.scorer(turns, reasoning, answer)
        except JudgeFailed as err:
            return Verdict(None, None, str(err))
        except Exception as err:  # a backend's own error after its retries: the answer stays, unscored
            return Verdict(None, None, f"judge call failed: {type(err).__name__}: {str(err)[:200]}")
        if any(scores.get(d) is None for d in DIMENSIONS):
            return Verdict(None, None, "judge gave no score for " + ", ".join(d for d in DIMENSIONS if scores.get(d) is None))
        return Verdict({d: float(scores[d]) for d in DIMENSIONS}, weighted_score(scores, self.weights), "")
