"""Per-step judge metrics in GRPO (judge/*), and the pause when too many judge calls fail."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from transformers import TrainerCallback

from engine.context import StageContext
from engine.training.rewards import JudgeCache

# The keys this callback writes each step (the GRPO doctor and the Training screen read them).
JUDGE_KEYS = ("judge/calls", "judge/cache_hits", "judge/failures", "judge/failed_share", "judge/unscored",
              "judge/wall_s", "judge/step_share")


class JudgeWatch(TrainerCallback):
    """Writes judge/* for every optimizer step; stops training (with a checkpoint) when the share of failed judge
    calls over the last `window` steps exceeds `max_failed_share`, so the stage pauses instead of training on noise."""

    def __init__(self, ctx: StageContext, cache: JudgeCache, max_failed_share: float = 0.2, window: int = 10,
                 prefix: str = ""):
        self.ctx = ctx
        self.cache = cache
        self.max_failed_share = max_failed_share
        self.window: deque[tuple[int, int]] = deque(maxlen=max(1, window))  # (calls, failures) per step
        self.prefix = prefix
        self.reason: str | None = None
        self._t0 = time.perf_counter()
        self._before = cache.stats.copy()

    def on_step_begin(self, args, state, control, **kwargs: Any):
        self._t0 = time.perf_counter()
        self._before = self.cache.stats.copy()

    def on_step_end(self, args, state, control, **kwargs: Any):
        step_s = time.perf_counter() - self._t0
        now, before = self.cache.stats.copy(), self._before
        calls = now.calls - before.calls
        failures = now.failures - before.failures
        wall = now.wall_s - before.wall_s
        p = self.prefix
        self.ctx.metrics(state.global_step, {
            f"{p}judge/calls": calls,
            f"{p}judge/cache_hits": now.cache_hits - before.cache_hits,
            f"{p}judge/failures": failures,
            f"{p}judge/failed_share": failures / calls if calls else 0.0,
            f"{p}judge/unscored": now.unscored - before.unscored,
            f"{p}judge/wall_s": wall,
            f"{p}judge/step_share": min(1.0, wall / step_s) if step_s > 0 else 0.0,
        })
        self.window.append((calls, failures))
        total_calls = sum(c for c, _ in self.window)
        total_failed = sum(f for _, f in self.window)
        share = total_failed / total_calls if total_calls else 0.0
        want_stop = share > self.max_failed_share
        from engine.training.distributed import all_ranks_stop

        if all_ranks_stop(want_stop):
            self.reason = (
                f"judge failures {total_failed} of {total_calls} calls ({share:.0%}) over the last {len(self.window)} "
                f"step(s) exceed grpo.judge_max_failed_share {self.max_failed_share:.0%}: paused at step "
                f"{state.global_step} with a checkpoint; check the judge backend, then `aba resume`"
            )
            control.should_save = True
            control.should_training_stop = True
        return control
