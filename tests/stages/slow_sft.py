"""A test-only stand-in for sft: the real SFT stage, each step made SLOW_STEP_S seconds longer (an 8B GRPO step)."""

from __future__ import annotations

import os
import time


def run(ctx) -> None:
    from engine.stages import sft
    from engine.training.callbacks import StoreCallback

    delay = float(os.environ.get("SLOW_STEP_S", "3"))
    original = StoreCallback.on_step_begin

    def slow_step_begin(self, args, state, control, **kwargs):
        original(self, args, state, control, **kwargs)  # starts the step clock, so the delay counts in step time
        time.sleep(delay)

    StoreCallback.on_step_begin = slow_step_begin
    sft.run(ctx)
