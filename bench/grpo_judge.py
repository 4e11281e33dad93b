"""GRPO with an LLM judge in the loop: a local OpenAI-compatible judge with 0.5 s latency against the offline judge.

Runs the grpo stage's training (train_grpo) for a few steps three ways in this process: the offline heuristic judge
(the baseline), the slow judge one call at a time (judge.llm.concurrency = 1: what one-by-one scoring cost), and the
slow judge with the configured concurrency. Prints the peak number of judge calls the server saw in flight (target:
min(concurrency, distinct completions per step)) and the step-time ratio against the offline judge (target:
<= 1 + 1.2 x latency / offline step time).

    python bench/grpo_judge.py [--steps 3] [--skip-serial] [--quick]
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

from _util import demo_grpo_context

STEPS = 3
LATENCY_S = 0.5
CONCURRENCY = 8


def _setup(tmp: Path, judge_url: str | None, concurrency: int):
    def use_judge(cfg) -> None:
        if judge_url:
            j = cfg.judge.llm
            j.backend, j.base_url, j.model = "openai", judge_url, "fake-judge"
            j.concurrency, j.rpm, j.max_retries = concurrency, 100_000, 0

    return demo_grpo_context(tmp, use_judge)


def run(tmp: Path, judge_url: str | None, concurrency: int = CONCURRENCY) -> tuple[float, list]:
    """Median step time (the first step, which builds caches, left out) and the judge/* metrics per step."""
    from engine.training.grpo import train_grpo
    from engine.models import loading as models

    cfg, ctx, base = _setup(tmp, judge_url, concurrency)
    _, cb = train_grpo(ctx, models.pick_backend(cfg), base, tmp / "out", max_steps=STEPS)
    assert len(cb.step_times) == STEPS
    judge = [m for m in ctx.store.metrics_since(0, stage="grpo") if m.key.startswith("judge/")]
    return statistics.median(cb.step_times[1:]), judge


def main() -> None:
    import argparse

    from tests.fake_openai import FakeOpenAI  # the tests' local OpenAI-compatible server

    global STEPS, LATENCY_S
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=STEPS, help="steps per variant (at least 2; the first is left out)")
    ap.add_argument("--skip-serial", action="store_true", help="leave out the one-at-a-time variant (saves time)")
    ap.add_argument("--quick", action="store_true", help="2 steps, 50 ms judge latency, no one-at-a-time variant")
    args = ap.parse_args()
    STEPS = 2 if args.quick else max(2, args.steps)
    LATENCY_S = 0.05 if args.quick else LATENCY_S
    serial = float("nan")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        os.environ.setdefault("ABA_CACHE_DIR", str(tmp / "cache"))  # the demo base is built once for every variant
        offline, _ = run(tmp / "offline", None)
        with FakeOpenAI(latency_s=LATENCY_S, judge_scores="varied") as srv:
            if not (args.skip_serial or args.quick):
                serial, _ = run(tmp / "serial", srv.url, concurrency=1)
            srv.reset_peak()
            concurrent, judge = run(tmp / "concurrent", srv.url)
            peak = srv.peak_in_flight
    calls = [m.value for m in judge if m.key == "judge/calls"]
    distinct = max(calls) if calls else 0
    target_ratio = 1 + 1.2 * LATENCY_S / offline
    print(f"steps {STEPS} per variant; judge latency {LATENCY_S} s; judge.llm.concurrency {CONCURRENCY}")
    print(f"median step time: offline judge {offline:.2f} s, slow judge one at a time {serial:.2f} s, "
          f"slow judge concurrent {concurrent:.2f} s")
    print(f"distinct completions per step (judge/calls): {calls}")
    print(f"peak concurrent judge calls: {peak} (target {min(CONCURRENCY, int(distinct))})")
    print(f"step-time ratio vs offline judge: concurrent {concurrent / offline:.2f} (target <= {target_ratio:.2f}); "
          f"one at a time {serial / offline:.2f}")


if __name__ == "__main__":
    main()
