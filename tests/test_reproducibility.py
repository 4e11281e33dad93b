"""Same config + same seed + same data -> the same numbers: two demo runs compared metric row by metric row."""

from __future__ import annotations

from engine import config
from engine.reporting.compare import WALL_CLOCK_KEYS, is_wall_clock
from engine.runner import supervisor as sup
from engine.store import RunStore
from engine.models import loading as models
from tests.conftest import aba, demo_variant, run_id_of

STAGES = "datagen,judge,sft,grpo"
# One torch thread per worker: the two runs share the CPU, and OpenMP threads spinning against each other on a busy
# machine cost more than they give. Both runs use the same setting, which is all reproducibility asks.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def prebuild_demo_base(tmp_path, seed: int = 3407) -> None:
    """Build the tiny base once into the session's cache here, not in each run's worker at the same time."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        models.materialize_demo_base("demo:tiny-qwen3", seed, tmp_path / "prebuilt")
    finally:
        torch.set_num_threads(threads)


def _rows(run_dir) -> list[tuple]:
    """Every metric row as (stage, step, key, value), wall-clock keys left out by name (WALL_CLOCK_KEYS)."""
    with RunStore(run_dir / "run.db", readonly=True) as s:
        rows = s.metrics_since(0, limit=10_000_000)
    return sorted((r.stage, r.step, r.key, r.value) for r in rows if not is_wall_clock(r.key))


def _traces(run_dir) -> dict[str, tuple]:
    with RunStore(run_dir / "run.db", readonly=True) as s:
        return {h: 1 for h in s.trace_hashes().values()}, s.data_hash()


def test_two_demo_runs_give_identical_metric_rows(tmp_path, runs_dir):
    # Few steps (datagen 4 threads over 24 calls, judge 4 threads, 4 SFT steps, 2 GRPO steps) so both runs, made at
    # the same time, take well under a minute; every source of order (threads finishing, dataset order, the LoRA's
    # initial weights, sampling) is exercised.
    cfg = demo_variant(
        tmp_path, datagen__max_prompts=6, sft__max_steps=4, sft__per_device_train_batch_size=2, sft__min_score=0.3,
        grpo__max_steps=2, grpo__num_generations=2, grpo__per_device_train_batch_size=2,
        grpo__gradient_accumulation_steps=1, grpo__max_completion_length=16, grpo__sample_every=1,
    )
    prebuild_demo_base(tmp_path, config.load(cfg).run.seed)
    ids = []
    for _ in range(2):
        proc = aba("run", str(cfg), "--stages", STAGES, "--detach", env=ONE_THREAD)
        assert proc.returncode == 0, proc.stderr
        ids.append(run_id_of(proc))
    dirs = [sup.resolve_run(i, runs_dir) for i in ids]
    try:
        for d in dirs:
            rows = sup.wait(d, timeout_s=900)  # room for a loaded CI box
            bad = [(r.name, r.status, r.reason) for r in rows if r.selected and r.status != "succeeded"]
            assert not bad, bad
    finally:
        for d in dirs:  # a failed or timed-out test leaves no worker behind
            sup.cancel(d, grace_s=2)
    a, b = _rows(dirs[0]), _rows(dirs[1])
    stages = {r[0] for r in a}
    assert stages == {"datagen", "judge", "sft", "grpo"}, stages
    assert {"loss", "reward", "llm/tokens_in", "judge/ok"} <= {r[2] for r in a}
    assert len(a) == len(b) and a == b, next((x, y) for x, y in zip(a, b) if x != y) if len(a) == len(b) else (len(a), len(b))
    assert _traces(dirs[0]) == _traces(dirs[1])  # the same traces and scores (ids may follow finishing order)
    # The wall-clock keys really are there and really differ: that is why, and only why, they are left out.
    with RunStore(dirs[0] / "run.db", readonly=True) as s:
        keys = {k for _, k in s.metric_keys()}
    assert {"llm/latency_s", "step_time_s"} <= keys and {"llm/latency_s", "step_time_s"} <= WALL_CLOCK_KEYS


def test_in_order_hands_results_on_by_position_whatever_order_threads_finish_in():
    import random
    import threading
    import time

    from engine.llm.ordered import InOrder

    seen: list[int] = []
    ordered = InOrder(lambda pos, payload: seen.append(payload))
    delays = list(range(40))
    random.Random(0).shuffle(delays)

    def one(pos: int) -> None:
        time.sleep(delays[pos] / 2000)  # later positions often finish first
        ordered.done(pos, pos)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == list(range(40))


def test_training_and_judging_read_traces_in_call_order_not_finishing_order(tmp_path):
    import random

    from engine.dims import TIERS

    calls = [(p, tier, idx) for p in range(3) for tier in TIERS for idx in range(2)]
    finished = calls[:]
    random.Random(1).shuffle(finished)  # the order threads happened to finish in: the ids follow it
    with RunStore(tmp_path / "run.db", create=True) as s:
        pids = [s.add_prompt(f"p{p}", "safety", [{"role": "user", "content": f"q{p}"}], "test") for p in range(3)]
        for p, tier, idx in finished:
            s.add_trace({"call_key": f"{p}-{tier}-{idx}", "prompt_id": pids[p], "category": "safety", "tier": tier,
                         "idx": idx, "reasoning": "r", "answer": "a"})
        order = [(t["prompt_id"] - pids[0], t["tier"], t["idx"]) for t in s.traces()]
        judged = [s.trace(i) for i in s.unjudged_trace_ids()]
    assert order == calls
    assert [(t["prompt_id"] - pids[0], t["tier"], t["idx"]) for t in judged] == calls
