"""Eval's comparisons under a failing judge: failed pairs are skipped and counted, never scored 0 or a tie."""

from __future__ import annotations

import threading
import time

from engine.evaluation.tournament import ChecklistItem, checklist, paired_diffs, tournament
from engine.judging.llm_judge import pairwise_llm
from engine.llm.limits import LimitedBackend, RetryPolicy
from engine.llm.openai_compat import OpenAIBackend
from tests.fake_openai import FakeOpenAI


def test_paired_comparison_skips_pairs_where_the_judge_failed():
    diffs, skipped = paired_diffs([0.8, None, 0.6, 0.7], [0.5, 0.4, None, 0.6])
    assert [round(d, 6) for d in diffs] == [0.3, 0.1] and skipped == 2
    items = checklist({}, {"grpo": [], "base": []}, {"grpo": [0.8, None, 0.6, 0.7], "base": [0.5, 0.4, None, 0.6]},
                      "grpo", "base", 50)
    row = items[ChecklistItem.IMPROVES]
    assert row["skipped"] == 2 and "over 2 held-out prompts; 2 pair(s) skipped, judge failed" in row["detail"]


def test_tournament_runs_concurrently_and_skips_failed_pairs():
    lock, state = threading.Lock(), {"now": 0, "peak": 0, "calls": 0}

    def decide(turns, first, second):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
            state["calls"] += 1
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        if "bad" in first or "bad" in second:
            return None  # the judge never answered usably
        return "A" if len(first) > len(second) else "B"

    outputs = {"base": ["a", "b", "c"], "sft": ["aa", "bad", "cc"], "grpo": ["aaa", "bbb", "ccc"]}
    prompts = [[{"role": "user", "content": f"q{k}"}] for k in range(3)]
    matches, skipped = tournament(outputs, prompts, decide, concurrency=4)
    assert state["calls"] == 3 * 3 * 2 and state["peak"] == 4
    assert skipped == 2  # sft's prompt 1 against base and against grpo
    assert len(matches) == 7 and all(m.score in (0.0, 1.0) for m in matches)  # longer always wins both orders
    serial, n = tournament(outputs, prompts, decide, concurrency=1)
    assert [(m.a, m.b, m.score) for m in serial] == [(m.a, m.b, m.score) for m in matches] and n == skipped


def test_pairwise_llm_returns_none_when_the_judge_keeps_failing():
    with FakeOpenAI(fault_rate=1.0, faults=("500",)) as srv:
        limited = LimitedBackend(OpenAIBackend("j", srv.url, timeout_s=5), 2, 10_000, 10**9, RetryPolicy(1, 0.01))
        assert pairwise_llm(limited, [{"role": "user", "content": "q"}], "x", "y", attempts=2) is None
    with FakeOpenAI() as srv:
        limited = LimitedBackend(OpenAIBackend("j", srv.url, timeout_s=5), 2, 10_000, 10**9, RetryPolicy(0, 0.01))
        assert pairwise_llm(limited, [{"role": "user", "content": "q"}], "x", "y") == "A"
