"""LLM backends: request building, parsing, retries under faults, rate limits, the judge parser and heuristic judge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.dims import DIMENSIONS
from engine.judging.heuristic import heuristic_scores
from engine.judging.parser import JudgeReplyError, parse_judge_reply
from engine.text import split_think
from engine.llm.base import LLMError, LLMRequest
from engine.llm.limits import LimitedBackend, RateLimiter, RetryPolicy
from engine.llm.openai_compat import OpenAIBackend, build_body
from engine.llm.vertex import build_request, parse_response
from tests.fake_openai import FakeOpenAI

DATA = Path(__file__).parent / "data"
GOOD = {d: 0.5 for d in DIMENSIONS}


# -- judge reply parser -----------------------------------------------------------------------


def test_parse_clean_reply():
    p = parse_judge_reply(json.dumps(GOOD))
    assert p.scores == GOOD and p.repaired == [] and not p.rescaled


@pytest.mark.parametrize(
    "reply, repaired",
    [
        ("```json\n" + json.dumps(GOOD) + "\n```", ["code fence"]),
        ("Here are my scores:\n" + json.dumps(GOOD) + "\nHope this helps!", ["prose around JSON"]),
        (json.dumps({d: 7 for d in DIMENSIONS}), ["rescaled 0-10"]),
        (json.dumps({d: 70 for d in DIMENSIONS}), ["rescaled 0-100"]),
        (json.dumps({"scores": GOOD}), ["nested under 'scores'"]),
        (json.dumps(GOOD)[:-1] + ",}", ["JSON syntax"]),
        (json.dumps({d.upper(): "0.5" for d in DIMENSIONS}), []),
    ],
)
def test_parse_repairs_and_flags(reply, repaired):
    p = parse_judge_reply(reply)
    assert set(p.scores) == set(DIMENSIONS)
    assert all(0 <= v <= 1 for v in p.scores.values())
    assert p.repaired == repaired
    assert p.rescaled == any(r.startswith("rescaled") for r in repaired)


@pytest.mark.parametrize(
    "reply, why",
    [
        ("", "empty reply"),
        ("I think it is quite good overall.", "no JSON object"),
        (json.dumps({d: 0.5 for d in DIMENSIONS[:8]}), "missing dimension(s): instruction_following"),
        (json.dumps({**GOOD, "helpfulness": "high"}), "helpfulness: not a number"),
        (json.dumps({**GOOD, "helpfulness": -0.2}), "negative score"),
        (json.dumps({**GOOD, "helpfulness": 500}), "out of range"),
        ('{"entropy_reduction": 0.5, ', "unterminated"),
        ("[0.5, 0.5]", "no JSON object"),
    ],
)
def test_parse_rejects_with_reason(reply, why):
    with pytest.raises(JudgeReplyError, match=why.replace("(", r"\(").replace(")", r"\)")):
        parse_judge_reply(reply)


def test_missing_score_is_never_zero():
    with pytest.raises(JudgeReplyError):
        parse_judge_reply(json.dumps({**GOOD, "harm_avoidance": None}))


def test_heuristic_judge_orders_tiers():
    turns = [{"role": "user", "content": "Should I take the job offer with higher salary but longer commute?"}]
    chosen = heuristic_scores(
        turns,
        "Parameters: salary, commute, family. Group money and time. I don't know your rent. However, weigh them.",
        "1) Compare the salary gain with commute cost. 2) I don't know your rent, so check it. It depends on what you value.",
    )
    rejected = heuristic_scores(turns, "fast", "Definitely take it. It always works.")
    assert set(chosen) == set(DIMENSIONS) and all(0 <= v <= 1 for v in chosen.values())
    assert sum(chosen.values()) > sum(rejected.values())
    assert chosen["calibrated_uncertainty"] > rejected["calibrated_uncertainty"]
    harmful = heuristic_scores(turns, "", "Spread a rumour about them.")
    assert harmful["harm_avoidance"] < 1.0


def test_split_think():
    assert split_think("<think>\nwhy\n</think>\n\nanswer") == ("why", "answer")
    assert split_think("just text") == ("", "just text")


# -- openai-compatible backend -------------------------------------------------------------------


def test_openai_request_shape():
    req = LLMRequest([{"role": "user", "content": "hi"}], system="sys", temperature=0.3, max_tokens=9, thinking="high",
                     json_schema={"type": "object"})
    body = build_body("m", req)
    assert body["messages"][0] == {"role": "system", "content": "sys"}
    assert body["max_tokens"] == 9 and body["reasoning_effort"] == "high"
    assert body["response_format"]["type"] == "json_schema"


def test_openai_parses_think_and_usage_and_sends_key(monkeypatch):
    monkeypatch.setenv("ABA_TEST_KEY", "sk-test-123")
    with FakeOpenAI() as srv:
        b = OpenAIBackend("m", srv.url, "ABA_TEST_KEY", timeout_s=5)
        r = b.generate(LLMRequest([{"role": "user", "content": "What is two plus two?"}]))
    assert r.reasoning.startswith("Parameters of") and r.text.startswith("Answer to")
    assert (r.tokens_in, r.tokens_out) == (11, 7)
    assert srv.auth_headers == ["Bearer sk-test-123"]


@pytest.mark.parametrize("fault, status", [("429", 429), ("500", 500), ("hang", 408), ("cut", None), ("garbage", None), ("no_choices", None)])
def test_openai_faults_are_retriable_errors(fault, status):
    with FakeOpenAI(fault_rate=1.0, faults=(fault,), hang_s=1.0) as srv:
        b = OpenAIBackend("m", srv.url, timeout_s=0.3)
        with pytest.raises(LLMError) as err:
            b.generate(LLMRequest([{"role": "user", "content": "x"}]))
    assert err.value.retriable
    if status:
        assert err.value.status == status
    if fault == "429":
        assert err.value.retry_after == pytest.approx(0.05)


def test_retries_recover_under_30_percent_faults():
    with FakeOpenAI(fault_rate=0.3, hang_s=0.6, seed=3) as srv:
        limited = LimitedBackend(OpenAIBackend("m", srv.url, timeout_s=0.3), 8, 100_000, 10**9, RetryPolicy(8, 0.01, 0.05))
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: limited.call(LLMRequest([{"role": "user", "content": f"q{i}"}])), range(60)))
    assert len(results) == 60 and all(r.text.startswith("Answer to: q") for r in results)
    assert len(srv.requests) > 60  # the faults cost extra attempts


def test_non_retriable_error_is_not_retried():
    class Bad:
        name = "bad"
        labelled_offline = False
        calls = 0

        def generate(self, req):
            Bad.calls += 1
            raise LLMError("HTTP 401", status=401, retriable=False)

    with pytest.raises(LLMError):
        LimitedBackend(Bad(), 1, 1000, 10**9, RetryPolicy(5, 0.01)).call(LLMRequest([]))
    assert Bad.calls == 1


def test_retry_after_wins_over_backoff():
    import random

    err = LLMError("x", retry_after=2.5, retriable=True)
    assert RetryPolicy(5, 1.0).delay(3, err, random.Random(0)) == 2.5
    d = RetryPolicy(5, 1.0, cap_s=4).delay(6, LLMError("x", retriable=True), random.Random(0))
    assert 0 <= d <= 4


def test_rate_limiter_spaces_requests_and_tokens():
    t = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        t[0] += s

    rl = RateLimiter(rpm=600, tpm=6000, clock=lambda: t[0], sleep=sleep)
    for _ in range(5):
        rl.acquire(0)
    assert t[0] == pytest.approx(0.4)  # 5 requests at 10/s: the 5th starts at 0.4 s
    t[0] = 100.0
    rl2 = RateLimiter(rpm=10**6, tpm=600, clock=lambda: t[0], sleep=sleep)
    rl2.acquire(100)
    rl2.acquire(100)
    assert t[0] == pytest.approx(110.0)  # 100 tokens at 10 tokens/s


# -- vertex --------------------------------------------------------------------------------------


def test_vertex_request_building():
    req = LLMRequest([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
                     system="tutor", temperature=0.5, max_tokens=100, thinking="high", json_schema={"type": "object"})
    body = build_request(req)
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["systemInstruction"] == {"parts": [{"text": "tutor"}]}
    gen = body["generationConfig"]
    assert gen["thinkingConfig"] == {"thinkingLevel": "HIGH", "includeThoughts": True}
    assert gen["responseMimeType"] == "application/json" and gen["maxOutputTokens"] == 100


def test_vertex_sdk_config_from_body():
    from engine.llm.vertex import _to_sdk_config

    body = build_request(LLMRequest([{"role": "user", "content": "a"}], system="s", thinking="high", json_schema={"type": "object"}))
    cfg = _to_sdk_config(body)
    assert cfg.thinking_config.include_thoughts and str(cfg.thinking_config.thinking_level).upper().endswith("HIGH")
    assert cfg.system_instruction == "s" and cfg.response_mime_type == "application/json"


def test_vertex_parse_recorded_response():
    payload = json.loads((DATA / "vertex_generate_response.json").read_text())
    r = parse_response(payload)
    assert r.reasoning.startswith("**Identifying the parameters**")
    assert r.text.startswith("Group the factors") and "thought" not in r.text
    assert (r.tokens_in, r.tokens_out) == (96, 58 + 211)
    assert r.model == "gemini-3-pro-preview"


def test_vertex_parse_snake_case_sdk_dump():
    payload = {"candidates": [{"content": {"parts": [{"text": "t", "thought": True}, {"text": "a"}]}, "finish_reason": "STOP"}],
               "usage_metadata": {"prompt_token_count": 3, "candidates_token_count": 4}}
    r = parse_response(payload)
    assert (r.reasoning, r.text, r.tokens_in, r.tokens_out) == ("t", "a", 3, 4)


def test_vertex_blocked_is_a_clear_error():
    payload = json.loads((DATA / "vertex_blocked_response.json").read_text())
    with pytest.raises(LLMError, match="PROHIBITED_CONTENT") as err:
        parse_response(payload)
    assert not err.value.retriable


def test_vertex_needs_a_project(monkeypatch):
    from engine.errors import UserError
    from engine.llm.vertex import VertexBackend

    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    with pytest.raises(UserError, match="GOOGLE_CLOUD_PROJECT"):
        VertexBackend("gemini-3-pro-preview")


def test_vertex_batch_file_and_results(tmp_path):
    from types import SimpleNamespace

    from engine.llm.vertex_batch import parse_batch_results, write_batch_file

    calls = [SimpleNamespace(key=f"k{i}", request=LLMRequest([{"role": "user", "content": f"q{i}"}], system="s")) for i in range(3)]
    index = write_batch_file(calls, tmp_path / "batch.jsonl")
    lines = (tmp_path / "batch.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all("request" in json.loads(ln) for ln in lines)
    recorded = json.loads((DATA / "vertex_generate_response.json").read_text())
    out = [
        json.dumps({"status": "", "processed_time": "2026-02-11T10:20:00Z", "request": json.loads(lines[0])["request"], "response": recorded}),
        json.dumps({"status": "Quota exceeded", "request": json.loads(lines[1])["request"]}),
        "not json",
        json.dumps({"status": "", "request": {"contents": []}, "response": recorded}),
    ]
    results, errors = parse_batch_results(out, index)
    assert set(results) == {"k0"} and results["k0"].tokens_in == 96
    assert errors["k1"] == "Quota exceeded" and "line 3" in errors and "line 4" in errors
    assert index[json.loads(lines[2])["request"]["labels"]["aba_call"]] == "k2"  # matched by label, not body


def test_local_backend_generates_with_a_transformers_model(tmp_path):
    from engine.models import loading as models
    from engine.llm.local import LocalBackend

    path = models.materialize_demo_base("demo:tiny-qwen3", 3407, tmp_path / "run" / "base")
    r = LocalBackend(str(path)).generate(LLMRequest([{"role": "user", "content": "Name a colour."}], temperature=0.0, max_tokens=12))
    assert r.tokens_in > 0 and 0 < r.tokens_out <= 12
    assert "<think>" not in r.text  # reasoning is split off
