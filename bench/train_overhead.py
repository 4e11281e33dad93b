"""The grpo stage against a bare TRL script doing the same work: same tiny model, prompts, GRPO settings, seed,
torch threads and reward.

Both sides run in this process, alternating, several rounds. Before any time is compared the bench shows that they
did the same work, and stops if they did not: the training arguments that shape the work are equal, the prompts are
the same, and step for step the completion lengths (TRL's completions/mean_length, min_length, max_length) and the
losses are equal. Step time is the wall time of one whole turn of the training loop (from one step's start to the
next's, so callbacks and logging count), timed by the same callback on both sides. Prints the ratio of median step
times (target <= 1.03). Peak RSS: each side once in its own fresh process; prints the ratio (target <= 1.05).

    python bench/train_overhead.py [--steps 8] [--rounds 6] [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _util import ROOT, demo_grpo_context, peak_rss_mb

STEPS = 8
ROUNDS = 6  # 3 rounds gave 0.936 and 6 gave 1.005 on the same tree, minutes apart: fewer is noise
# What TRL logs each step that tells what work the step did: the lengths of the completions it generated and trained
# on, their reward, and the loss. Equal on both sides, step for step, or the timing compares different work.
WORK = ("completions/mean_length", "completions/min_length", "completions/max_length", "reward", "loss")
# Arguments that only say where files go (or that none are written here), and what the stage records on top (TRL's
# completions table, which the stage stores; printing none of it): everything else must be equal. The recording is
# work only the stage does, so it counts in the stage's overhead.
WHERE = {"output_dir", "logging_dir", "save_strategy", "save_steps", "save_total_limit"}
RECORDING = {"log_completions", "num_completions_to_print"}


@dataclass
class Side:
    step_times: list[float] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)  # per step: the WORK keys from TRL's log
    args: dict = field(default_factory=dict)
    prompts: list = field(default_factory=list)
    threads: int = 0


def _timed_trainer(side: Side):
    """GRPOTrainer with one more callback: the wall time of each turn of the training loop. Both sides use it."""
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    class LoopTimer(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[float] = []

        def on_step_begin(self, *a, **k):
            self.marks.append(time.perf_counter())

        def on_train_end(self, *a, **k):
            self.marks.append(time.perf_counter())
            side.step_times[:] = [b - a for a, b in zip(self.marks, self.marks[1:])]

    class Timed(GRPOTrainer):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.add_callback(LoopTimer())

    return Timed


def _finish(side: Side, trainer) -> Side:
    import torch

    side.steps = [{k: e[k] for k in WORK} for e in trainer.state.log_history if "loss" in e and "step" in e]
    side.args = trainer.args.to_dict()
    side.prompts = list(trainer.train_dataset["prompt"])
    side.threads = torch.get_num_threads()
    return side


def ours(tmp: Path, out: str, steps: int) -> Side:
    """The grpo stage's training (train_grpo): database, callbacks, judge cache, completions table, health."""
    import trl

    from engine.models import loading as models
    from engine.training.grpo import train_grpo

    side = Side()
    cfg, ctx, base = demo_grpo_context(tmp)
    real = trl.GRPOTrainer
    trl.GRPOTrainer = _timed_trainer(side)  # train_grpo imports it from trl when it builds the trainer
    try:
        trainer, _ = train_grpo(ctx, models.pick_backend(cfg), base, tmp / out, max_steps=steps)
    finally:
        trl.GRPOTrainer = real
    ctx.store.close()
    return _finish(side, trainer)


def bare(tmp: Path, out: str, steps: int) -> Side:
    """What a researcher's own script would do: GRPOTrainer, nine reward functions, no database, no callbacks. The
    same settings as the stage: the demo config's GRPO section, its seed, its LoRA, its prompts, its judge."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, set_seed
    from trl import GRPOConfig

    from engine.dims import DIMENSIONS, normalised
    from engine.judging.heuristic import heuristic_scores
    from engine.text import split_think
    from engine.models import loading as models
    from engine.models.trl_compat import ensure_fused_head
    from engine.training import data as traindata

    ensure_fused_head()  # TRL's fused head needs Triton; CPU torch has none (any CPU script needs this)
    side = Side()
    cfg, ctx, base = demo_grpo_context(tmp)
    g, seed = cfg.grpo, cfg.run.seed
    prompts = traindata.grpo_prompts(ctx.store, traindata.demo_data_reason(cfg, "grpo"))
    ctx.store.close()
    weights = normalised(g.reward_weights)
    cache: dict = {}

    def make(dim):
        def f(prompts, completions, **kw):
            out = []
            for p, c in zip(prompts, completions):
                text = c[0]["content"]
                key = (str(p), text)
                if key not in cache:
                    r, a = split_think(text)
                    cache[key] = heuristic_scores(p, r, a)
                out.append(cache[key][dim])
            return out

        f.__name__ = dim
        return f

    args = GRPOConfig(
        output_dir=str(tmp / out), learning_rate=g.learning_rate, max_steps=steps, num_generations=g.num_generations,
        max_completion_length=g.max_completion_length, per_device_train_batch_size=g.per_device_train_batch_size,
        gradient_accumulation_steps=g.gradient_accumulation_steps, beta=g.beta, temperature=g.temperature,
        reward_weights=[weights[d] for d in DIMENSIONS], logging_steps=g.logging_steps, save_strategy="no",
        report_to="none", seed=seed, data_seed=seed, use_cpu=True, bf16=False, fp16=False, disable_tqdm=True,
        gradient_checkpointing=cfg.model.gradient_checkpointing, dataloader_num_workers=0,
    )
    set_seed(seed)  # before the LoRA is made, as the stage does
    trainer = _timed_trainer(side)(
        model=AutoModelForCausalLM.from_pretrained(base), reward_funcs=[make(d) for d in DIMENSIONS], args=args,
        train_dataset=Dataset.from_list(prompts), processing_class=models.load_tokenizer(cfg.model.base),
        peft_config=models.lora_config(cfg),
    )
    trainer.train()
    return _finish(side, trainer)


def same_work(a: Side, b: Side) -> list[str]:
    """Where the two sides' work differs (empty: the same work)."""
    problems = []
    keys = (set(a.args) | set(b.args)) - WHERE - RECORDING
    if diff := sorted(k for k in keys if a.args.get(k) != b.args.get(k)):
        problems.append("training arguments differ: " + ", ".join(f"{k} {a.args.get(k)!r} vs {b.args.get(k)!r}" for k in diff))
    if a.prompts != b.prompts:
        problems.append(f"prompts differ ({len(a.prompts)} vs {len(b.prompts)})")
    if a.threads != b.threads:
        problems.append(f"torch threads differ ({a.threads} vs {b.threads})")
    if len(a.steps) != len(b.steps):
        problems.append(f"logged steps differ ({len(a.steps)} vs {len(b.steps)})")
    for i, (x, y) in enumerate(zip(a.steps, b.steps), start=1):
        if x != y:
            problems.append(f"step {i}: {x} vs {y}")
    return problems


def show(a: Side, b: Side) -> None:
    print("step  grpo stage: mean/min/max completion tokens, reward, loss | bare TRL: the same")
    for i, (x, y) in enumerate(zip(a.steps, b.steps), start=1):
        def line(s):
            return (f"{s['completions/mean_length']:5.1f}/{s['completions/min_length']:3.0f}/"
                    f"{s['completions/max_length']:3.0f}  {s['reward']:.6f}  {s['loss']:+.8f}")
        print(f"{i:4d}  {line(x)} | {line(y)}  {'same' if x == y else 'DIFFERENT'}")


def _child(which: str, tmp: str, steps: int, q) -> None:
    sys.path.insert(0, str(ROOT))
    (ours if which == "ours" else bare)(Path(tmp) / f"rss-{which}", f"rss-{which}", steps)
    q.put(peak_rss_mb())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=STEPS, help="steps per run (the first, which builds caches, is left out)")
    ap.add_argument("--rounds", type=int, default=ROUNDS, help="alternating rounds of the two sides")
    ap.add_argument("--quick", action="store_true", help="2 steps, 1 round, no peak-RSS processes: checks it runs")
    args = ap.parse_args()
    steps, rounds = (2, 1) if args.quick else (max(2, args.steps), max(1, args.rounds))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ.setdefault("ABA_CACHE_DIR", str(root / "cache"))  # the demo base is built once for every run
        if not args.quick:
            ours(root / "warm", "warm", steps)  # builds the demo base once and warms caches
        t_ours: list[float] = []
        t_bare: list[float] = []
        for r in range(rounds):
            b = bare(root / f"bare{r}", "out", steps)
            a = ours(root / f"ours{r}", "out", steps)
            if r == 0:
                print(f"train_overhead: torch threads {a.threads} (both sides); {len(a.prompts)} prompts; "
                      f"{steps} steps; seed {a.args['seed']}")
                show(a, b)
                if rec := [f"{k} {a.args.get(k)!r} (bare {b.args.get(k)!r})" for k in sorted(RECORDING)
                           if a.args.get(k) != b.args.get(k)]:
                    print("train_overhead: recorded by the stage only (part of its overhead): " + ", ".join(rec))
            if problems := same_work(a, b):
                print("train_overhead: the two sides did different work, so no ratio:\n  " + "\n  ".join(problems))
                return 1
            t_bare += b.step_times[1:]  # the first step of each run includes set-up
            t_ours += a.step_times[1:]
        print(f"train_overhead: same work on both sides in {rounds} round(s): equal training arguments (apart from "
              f"{', '.join(sorted(WHERE | RECORDING))}), prompts, torch threads, and per step completion lengths, "
              "rewards, losses")
        ratio = statistics.median(t_ours) / statistics.median(t_bare)
        print(f"train_overhead: median step {statistics.median(t_ours) * 1000:.1f} ms (grpo stage) vs "
              f"{statistics.median(t_bare) * 1000:.1f} ms (bare TRL), ratio {ratio:.3f} (target <= 1.03), "
              f"{rounds} alternating rounds of {steps} steps")
        if args.quick:
            print("train_overhead: --quick: peak RSS not measured")
            return 0
        ctx = mp.get_context("spawn")
        rss = {}
        for which in ("bare", "ours"):
            q = ctx.Queue()
            p = ctx.Process(target=_child, args=(which, tmp, steps, q))
            p.start()
            rss[which] = q.get()
            p.join()
        print(f"train_overhead: peak RSS {rss['ours']:.0f} MB (grpo stage) vs {rss['bare']:.0f} MB (bare TRL), "
              f"ratio {rss['ours'] / rss['bare']:.3f} (target <= 1.05)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
