"""The one TrainerCallback every training stage uses: metrics into the run database, cancel at step boundaries."""

from __future__ import annotations

import time
from typing import Any

from transformers import TrainerCallback

from engine.context import StageContext

# TRL/HF keys worth their own name in the database; everything numeric in `logs` is stored as TRL named it.
_SKIP = {"total_flos", "train_runtime", "train_samples_per_second", "train_steps_per_second"}


class StoreCallback(TrainerCallback):
    """Streams every log line (loss, lr, grad norm, KL, rewards/<dim>/mean, ...) plus tokens/s and step time."""

    def __init__(self, ctx: StageContext, prefix: str = "", total_steps: int | None = None, health: Any = None,
                 progress_span: tuple[int, int] | None = None):
        self.ctx = ctx
        # (steps before this training, steps of the whole stage): grpo-dims trains one LoRA after another and
        # reports progress over the whole stage (7/12), not per LoRA (1/6 again).
        self.progress_span = progress_span
        self.health = health  # a training.health.HealthReporter: the GRPO rules, run on every logged step
        self.prefix = prefix
        self.total_steps = total_steps
        self._t_step = time.perf_counter()
        self._last_tokens: tuple[float, float] | None = None
        self.step_times: list[float] = []
        self.vram: dict[str, Any] | None = None  # the estimate and measured peaks, set when training ends

    def on_train_begin(self, args, state, control, **kwargs: Any):
        self.total_steps = self.total_steps or state.max_steps
        if args.report_to and args.report_to != ["none"]:
            from engine.training.trackers import log_config

            log_config(self.ctx)
        self._t_step = time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs: Any):
        self.ctx.fault(state.global_step + 1)
        self._t_step = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs: Any):
        dt = time.perf_counter() - self._t_step
        self.step_times.append(dt)
        self.ctx.metrics(state.global_step, {f"{self.prefix}step_time_s": dt})
        total = self.total_steps or state.max_steps
        if self.progress_span is not None:
            before, whole = self.progress_span
            self.ctx.progress(before + state.global_step, whole, f"{self.prefix}step {state.global_step}/{total}")
        else:
            self.ctx.progress(state.global_step, total, f"{self.prefix}step {state.global_step}")
        from engine.training.distributed import all_ranks_stop

        if all_ranks_stop(self.ctx.should_stop()):
            # Stop at this boundary and let the Trainer write a checkpoint that resume continues from.
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs: Any):
        if not logs:
            return
        values: dict[str, float | None] = {}
        summary = "train_runtime" in logs  # the Trainer's end-of-training line: its epoch is this step's, logged
        for key, value in logs.items():
            if key in _SKIP or isinstance(value, bool) or (summary and key == "epoch"):
                continue
            if isinstance(value, (int, float)) or value is None:
                values[self.prefix + key] = value
        now = time.perf_counter()
        tokens = logs.get("num_tokens", getattr(state, "num_input_tokens_seen", None))
        if isinstance(tokens, (int, float)) and tokens:
            if self._last_tokens and now > self._last_tokens[1] and tokens > self._last_tokens[0]:
                values[self.prefix + "tokens_per_s"] = (tokens - self._last_tokens[0]) / (now - self._last_tokens[1])
            self._last_tokens = (float(tokens), now)
        self.ctx.metrics(state.global_step, values)
        if self.health is not None and self.ctx.primary:
            self.health.observe(state.global_step, {k: v for k, v in logs.items() if k not in _SKIP})
