"""The grpo stage against a bare TRL script: same tiny model, config, seed and reward.

Step times: both run in this process, alternating, several rounds; prints the ratio of median step times
(target <= 1.03). Peak RSS: each variant once in its own fresh process; prints the ratio (target <= 1.05).
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _util import ROOT, demo_grpo_context, peak_rss_mb

STEPS = 8
ROUNDS = 3


def _setup(tmp: Path):
    return demo_grpo_context(tmp)


def ours(tmp: Path, out: str) -> list[float]:
    from engine.models import loading as models
    from engine.training.grpo import train_grpo

    cfg, ctx, base = _setup(tmp)
    backend = models.pick_backend(cfg)
    _, cb = train_grpo(ctx, backend, base, tmp / out, max_steps=STEPS)
    return cb.step_times


def bare(tmp: Path, out: str) -> list[float]:
    """What a researcher's own script would do: GRPOTrainer, nine reward functions, no database, no callbacks."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from engine.models import loading as models
    from engine.training import data as traindata
    from engine.dims import DIMENSIONS
    from engine.judging.heuristic import heuristic_scores
    from engine.text import split_think
    from engine.models.trl_compat import ensure_fused_head

    ensure_fused_head()
    cfg, ctx, base = _setup(tmp)
    g = cfg.grpo
    tok = models.load_tokenizer(cfg.model.base)
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

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t)

    args = GRPOConfig(
        output_dir=str(tmp / out), learning_rate=g.learning_rate, max_steps=STEPS, num_generations=g.num_generations,
        max_completion_length=g.max_completion_length, per_device_train_batch_size=g.per_device_train_batch_size,
        gradient_accumulation_steps=g.gradient_accumulation_steps, beta=g.beta, temperature=g.temperature,
        reward_weights=[g.reward_weights[d] for d in DIMENSIONS], logging_steps=1, save_strategy="no", report_to="none",
        seed=cfg.run.seed, use_cpu=True, disable_tqdm=True, gradient_checkpointing=False,
    )
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(base), reward_funcs=[make(d) for d in DIMENSIONS], args=args,
        train_dataset=Dataset.from_list(traindata.grpo_prompts(ctx.store, traindata.demo_data_reason(cfg, "grpo"))), processing_class=tok,
        peft_config=models.lora_config(cfg), callbacks=[Timer()],
    )
    trainer.train()
    return times


def _child(which: str, tmp: str, q) -> None:
    sys.path.insert(0, str(ROOT))
    (ours if which == "ours" else bare)(Path(tmp), f"rss-{which}")
    q.put(peak_rss_mb())


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ours(root, "warm")  # builds the demo base once and warms caches
        t_ours: list[float] = []
        t_bare: list[float] = []
        for r in range(ROUNDS):
            t_bare += bare(root, f"bare{r}")[1:]  # the first step of each run includes set-up
            t_ours += ours(root, f"ours{r}")[1:]
        ratio = statistics.median(t_ours) / statistics.median(t_bare)
        print(f"train_overhead: median step {statistics.median(t_ours) * 1000:.1f} ms (grpo stage) vs "
              f"{statistics.median(t_bare) * 1000:.1f} ms (bare TRL), ratio {ratio:.3f} (target <= 1.03), "
              f"{ROUNDS} alternating rounds of {STEPS} steps")
        ctx = mp.get_context("spawn")
        rss = {}
        for which in ("bare", "ours"):
            q = ctx.Queue()
            p = ctx.Process(target=_child, args=(which, tmp, q))
            p.start()
            rss[which] = q.get()
            p.join()
        print(f"train_overhead: peak RSS {rss['ours']:.0f} MB (grpo stage) vs {rss['bare']:.0f} MB (bare TRL), "
              f"ratio {rss['ours'] / rss['bare']:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
