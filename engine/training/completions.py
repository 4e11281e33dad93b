"""Every completion of a sampled GRPO step (nine scores, reward, advantage, length, clipped) into the run database.

Through TRL's public seam: with `log_completions` on (and `num_completions_to_print = 0`: nothing printed), TRL's
GRPOTrainer writes each logged step's table to `<output_dir>/completions/completions_<step>.parquet` (prompt,
completion, one column per reward function, the extra columns reward functions add through `log_extra`, and the
advantage). TRL writes that file just after the step's `on_log`, so the recorder picks new files up at the next
step's start and at the end of training. The advantages are TRL's own, not recomputed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from engine.context import StageContext
from engine.dims import weighted_score

COMPLETIONS_DIR = "completions"  # TRL's folder under the trainer's output_dir (GRPOTrainer.log)
_FILE = re.compile(r"completions_(\d+)\.parquet$")


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


def completion_rows(table: dict[str, list], dims: tuple[str, ...], weights: dict[str, float], num_generations: int,
                    max_completion_length: int) -> list[dict[str, Any]]:
    """One row per completion of one logged generation batch (TRL's completions table as columns), grouped as TRL
    groups them (num_generations in a row). The reward is dims.weighted_score of the row's scores: None, never 0,
    when the judge left a dimension unscored."""
    prompts, completions = list(table.get("prompt", [])), list(table.get("completion", []))
    advantages = list(table.get("advantage", []))
    lengths = list(table.get("length", []))
    dim_weights = {d: weights.get(d, 0.0) for d in dims}
    rows = []
    for i, (p, c) in enumerate(zip(prompts, completions)):
        scores = {d: _num(table[d][i]) if d in table and i < len(table[d]) else None for d in dims}
        length = int(lengths[i]) if i < len(lengths) and _num(lengths[i]) is not None else None
        rows.append({
            "group": i // max(num_generations, 1), "index": i % max(num_generations, 1),
            "prompt": _last_user(p), "completion": _text(c), "scores": scores,
            "reward": weighted_score(scores, dim_weights),
            "advantage": _num(advantages[i]) if i < len(advantages) else None,
            "length": length,
            "clipped": None if length is None else length >= max_completion_length,
        })
    return rows


def read_table(path: Path) -> dict[str, list]:
    """One of TRL's completions parquet files as columns of plain Python values."""
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pydict()


class CompletionsRecorder(TrainerCallback):
    """At each sampled step (the first, then every `every`), stores the step's completions as a `completions` result,
    read from the table TRL writes with `log_completions` (see the module docstring)."""

    def __init__(self, ctx: StageContext, dims: tuple[str, ...], weights: dict[str, float], every: int, prefix: str = ""):
        self.ctx = ctx
        self.dims = dims
        self.weights = weights
        self.every = every
        self.prefix = prefix
        self._seen: set[str] = set()
        self._found = False

    def on_train_begin(self, args, state, control, **kwargs: Any):
        self._seen |= {p.name for p in self._files(args)}  # an earlier attempt's tables were stored by that attempt

    def on_step_begin(self, args, state, control, **kwargs: Any):
        self._collect(args)

    def on_train_end(self, args, state, control, **kwargs: Any):
        self._collect(args)
        if not self._found and state.global_step and self.ctx.primary and self.every:
            self.ctx.log("TRL wrote no completions table (log_completions): completions are not stored", "warn")

    @staticmethod
    def _files(args) -> list[Path]:
        folder = Path(args.output_dir) / COMPLETIONS_DIR
        return sorted(folder.glob("completions_*.parquet")) if folder.is_dir() else []

    def _collect(self, args) -> None:
        if not self.ctx.primary or not self.every:
            return
        for path in self._files(args):
            m = _FILE.search(path.name)
            if path.name in self._seen or not m:
                continue
            self._seen.add(path.name)
            self._found = True
            step = int(m.group(1))
            if step != 1 and step % self.every:
                continue
            top = int(args.max_completion_length)
            rows = completion_rows(read_table(path), self.dims, self.weights, int(args.num_generations), top)
            if rows:
                self.ctx.result("completions", f"{self.prefix}{step:07d}", {
                    "step": step, "num_generations": int(args.num_generations), "max_completion_length": top,
                    "rows": rows,
                })
