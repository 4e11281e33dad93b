"""GRPO with an LLM judge: one concurrent call per distinct completion, failures excluded (never a zero reward), pause."""

from __future__ import annotations

import pytest

from engine.dims import DIMENSIONS
from engine.llm.limits import LimitedBackend, RetryPolicy
from engine.llm.openai_compat import OpenAIBackend
from tests.conftest import DEMO
from tests.fake_openai import FakeOpenAI


def _judge(url: str, concurrency: int, retries: int = 0, attempts: int = 1):
    from engine.judging.llm_judge import LLMJudge

    limited = LimitedBackend(OpenAIBackend("fake-judge", url, timeout_s=10), concurrency, 100_000, 10**9,
                             RetryPolicy(retries, 0.01))
    return LLMJudge(limited, attempts=attempts, temperature=0.0)


def test_one_concurrent_call_per_distinct_completion_shared_by_nine_functions():
    from engine.training.rewards import JudgeCache

    prompts = [[{"role": "user", "content": f"question {i // 4}"}] for i in range(10)]
    completions = [f"<think>r{i}</think>answer {i}" for i in range(8)] + ["<think>r0</think>answer 0"] * 2
    with FakeOpenAI(latency_s=0.3, judge_scores="varied") as srv:
        cache = JudgeCache(_judge(srv.url, 4).score, concurrency=4, max_entries=6)
        funcs = cache.reward_functions()
        columns = [f(prompts=prompts, completions=completions) for f in funcs]
        judged = len(srv.requests)
        peak = srv.peak_in_flight
    assert len(funcs) == len(DIMENSIONS)
    # completions 8 and 9 repeat completion 0 but under prompt 2, not prompt 0: they are distinct, judged once
    assert judged == 9 and cache.stats.calls == 9 and cache.stats.cache_hits == 1
    assert peak == 4  # the backend's cap, reached
    assert all(v is not None and 0 < v < 1 for col in columns for v in col)
    assert columns[0][8] == columns[0][9]
    assert len(cache._cache) <= 6  # bounded


def _ctx(tmp_path, url: str, with_base: bool = True, **grpo):
    from engine import config
    from engine.config import STAGES
    from engine.context import StageContext
    from engine.store import RunStore

    cfg = config.load(DEMO)
    j = cfg.judge.llm
    j.backend, j.base_url, j.model, j.concurrency, j.rpm, j.max_retries = "openai", url, "fake-judge", 8, 100_000, 0
    cfg.judge.attempts = 1
    cfg.run.checkpoint_steps = 10_000
    for k, v in grpo.items():
        setattr(cfg.grpo, k, v)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config.save(cfg, run_dir / "config.toml")
    store = RunStore(run_dir / "run.db", create=True)
    store.init_run("t", "t", "demo", STAGES, ["grpo"])
    store.start_attempt("grpo", 0)
    # The run's own prompts: a run whose judge is not offline may not fall back to the shipped demo data.
    from engine.prompts import load_prompts, prompt_key

    for cat, prompts in load_prompts(DEMO.parents[1] / "prompts", ["calibration", "conflict"]).items():
        for pr in prompts[:4]:
            store.add_prompt(prompt_key(cat, pr.turns), cat, pr.turns, "shipped")
    ctx = StageContext(name="grpo", run_dir=run_dir, cfg=cfg, store=store)
    if not with_base:
        return cfg, ctx, None
    from engine.models import loading as models

    return cfg, ctx, models.base_path(cfg, run_dir)


def test_failed_judge_gives_no_reward_and_no_advantage(tmp_path, monkeypatch):
    import torch
    from trl import GRPOTrainer

    from engine.training.grpo import train_grpo
    from engine.models import loading as models

    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    calc, gen = GRPOTrainer._calculate_rewards, GRPOTrainer._generate_and_score_completions

    def calc_spy(self, *a, **k):
        out = calc(self, *a, **k)
        seen.append((out.detach().clone(), None))
        return out

    def gen_spy(self, *a, **k):
        out = gen(self, *a, **k)
        seen[-1] = (seen[-1][0], out["advantages"].detach().clone())
        return out

    monkeypatch.setattr(GRPOTrainer, "_calculate_rewards", calc_spy)
    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", gen_spy)
    with FakeOpenAI(fault_rate=0.3, faults=("500",), judge_scores="varied", seed=1) as srv:
        cfg, ctx, base = _ctx(tmp_path, srv.url, judge_max_failed_share=1.0)
        train_grpo(ctx, models.pick_backend(cfg), base, tmp_path / "out", max_steps=3)
        http_failures = len(srv.requests) - len(srv.answered)
    g = cfg.grpo.num_generations
    failed_rows = 0
    for rewards, adv in seen:
        unscored = torch.isnan(rewards).all(dim=1)
        assert torch.equal(torch.isnan(rewards).any(dim=1), unscored)  # a failure is None in all nine functions
        failed_rows += int(unscored.sum())
        assert torch.all(adv[unscored] == 0)  # no advantage, so no push either way
        w = torch.tensor([cfg.grpo.reward_weights[d] for d in DIMENSIONS])
        total = (rewards * w / w.sum()).nansum(dim=1)
        assert torch.all(total[~unscored] > 0)  # every scored completion has a real (non-zero) reward
        for grp in range(len(total) // g):
            sl = slice(grp * g, (grp + 1) * g)
            ok = ~unscored[sl]
            if ok.sum() < 2:
                assert torch.all(adv[sl] == 0)  # fewer than two scored: the group contributes nothing
                continue
            r = total[sl][ok]
            expect = (r - r.mean()) / (r.std() + 1e-4)  # baseline over the scored completions only
            assert torch.allclose(adv[sl][ok], expect, atol=1e-4)
    assert failed_rows > 0 and http_failures > 0
    rows = ctx.store.metrics_since(0, stage="grpo")
    failures = sum(m.value for m in rows if m.key == "judge/failures")
    calls = sum(m.value for m in rows if m.key == "judge/calls")
    assert failures == http_failures and calls == len(srv.requests)
    assert {"judge/calls", "judge/cache_hits", "judge/failures", "judge/failed_share", "judge/wall_s",
            "judge/step_share"} <= {m.key for m in rows}


def test_too_many_judge_failures_pause_the_stage(tmp_path):
    from engine.context import StageFailed
    from engine.training.grpo import train_grpo
    from engine.models import loading as models

    with FakeOpenAI(fault_rate=1.0, faults=("500",)) as srv:
        cfg, ctx, base = _ctx(tmp_path, srv.url, judge_max_failed_share=0.2, judge_failure_window=2)
        with pytest.raises(StageFailed, match=r"judge failures (\d+) of \1 calls \(100%\).*aba resume") as err:
            train_grpo(ctx, models.pick_backend(cfg), base, tmp_path / "out", max_steps=5)
    assert "\n" not in str(err.value)
    assert list((tmp_path / "out" / "checkpoints").glob("checkpoint-1"))  # paused at step 1, resumable


def test_judge_watch_writes_per_step_metrics_and_pauses_over_the_window(tmp_path):
    from types import SimpleNamespace

    from transformers import TrainerControl

    from engine.training.judge_watch import JudgeWatch
    from engine.training.rewards import JudgeCache

    outcomes = iter([True] * 9 + [False] * 1 + [True] * 8 + [False] * 2 + [False] * 3 + [True] * 5)  # per call
    cache = JudgeCache(lambda turns, r, a: {d: 0.5 if next(outcomes) else None for d in DIMENSIONS[:1]} | {
        d: 0.5 for d in DIMENSIONS[1:]}, dims=DIMENSIONS[:1])
    _, ctx, _ = _ctx(tmp_path, "http://127.0.0.1:9/v1", with_base=False)
    watch = JudgeWatch(ctx, cache, max_failed_share=0.2, window=2)
    control = TrainerControl()
    for step in (1, 2, 3):
        state = SimpleNamespace(global_step=step)
        watch.on_step_begin(None, state, control)
        n = 10 if step < 3 else 8
        cache.score_batch([[{"role": "user", "content": f"q{step}"}]] * n, [f"c{step}-{i}" for i in range(n)])
        watch.on_step_end(None, state, control)
        if step < 3:
            assert watch.reason is None and not control.should_training_stop  # 10%, then 3 of 20 = 15%
    # step 3: 3 of 8 failed; over the window (steps 2-3) 5 of 18 = 28% > 20%
    assert control.should_training_stop and control.should_save
    assert watch.reason.startswith("judge failures 5 of 18 calls (28%) over the last 2 step(s)")
    rows = {(m.step, m.key): m.value for m in ctx.store.metrics_since(0, stage="grpo")}
    assert rows[(3, "judge/calls")] == 8 and rows[(3, "judge/failures")] == 3 and rows[(3, "judge/failed_share")] == 3 / 8
    assert rows[(1, "judge/cache_hits")] == 0 and 0 <= rows[(1, "judge/step_share")] <= 1
