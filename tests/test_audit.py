"""The judge audit: degenerate completions against real traces, test-retest, position bias; heuristic and LLM judge."""

from __future__ import annotations

import json
import re

import pytest

from engine.dims import DIMENSIONS
from engine.evaluation.audit import degenerate_completions
from engine.runner import supervisor as sup
from engine.store import RunStore
from tests.conftest import aba, copy_run, demo_variant, run_id_of
from tests.fake_openai import FakeOpenAI

KINDS = {"empty", "colon", "thought_process", "prompt_echo", "refusal", "confident_wrong", "random_tokens"}


class GullibleJudge(FakeOpenAI):
    """A judge that scores by answer length, is fooled by ':' and 'Thought process:', and always prefers position A."""

    def _reply(self, body: dict) -> dict:
        system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
        user = body["messages"][-1]["content"]
        if "comparing two assistant responses" in system:
            text = json.dumps({"winner": "A"})
        elif "impartial judge" in system:
            answer = re.search(r"ASSISTANT ANSWER:\n(.*)\n\nScores \(JSON\):", user, re.S).group(1).strip()
            score = 0.95 if answer in (":", "Thought process:") else min(len(answer) / 400, 0.8)
            text = json.dumps({d: round(score, 3) for d in DIMENSIONS})
        else:
            return super()._reply(body)
        return {"id": "x", "object": "chat.completion", "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}}


def _audit(run_id: str, runs_dir, stage: str = "judge") -> tuple[dict, dict, list]:
    with RunStore(sup.resolve_run(run_id, runs_dir) / "run.db") as store:
        return store.results(stage, "audit"), store.results(stage, "health"), store.events(kind="health")


def test_degenerate_set_is_fixed_and_seeded():
    a, b = degenerate_completions("Why is the sky blue?", 3), degenerate_completions("Why is the sky blue?", 3)
    assert a == b and set(a) == KINDS
    assert a["empty"] == "" and a["colon"] == ":" and a["thought_process"] == "Thought process:"
    assert a["prompt_echo"] == "Why is the sky blue?"


def test_heuristic_judge_audit_in_the_judge_stage(runs_dir, demo_judged_run):
    proc, run_dir = demo_judged_run  # the demo config's datagen and judge, run once per session
    assert proc.returncode == 0, proc.stderr[-2000:]
    copy_run(run_dir, runs_dir)
    audit, health, events = _audit(run_id_of(proc), runs_dir)
    assert {k.split("/", 1)[1] for k in audit if k.startswith("degenerate/")} == KINDS
    summary = audit["summary"]
    assert summary["judge"] == "heuristic (offline)" and summary["real_traces"] == 96
    # The heuristic judge reads text features only: empty and ':' earn little, below what real traces get.
    for kind in ("empty", "colon", "thought_process", "random_tokens"):
        assert not audit[f"degenerate/{kind}"]["above_median"], kind
        assert audit[f"degenerate/{kind}"]["reward"] < summary["median_real"]
    # It is a deterministic function of the text: re-judging agrees perfectly; both orders agree.
    assert audit["retest"]["mean_alpha"] == 1.0 and audit["retest"]["traces"] == 6
    assert audit["position"]["pairs"] == 4 and audit["position"]["consistent"] == 1.0
    assert health["judge_fooled"]["state"] == ("alarm" if summary["fooled_by"] else "ok")
    assert [e.data["first"] for e in events] == [bool(summary["fooled_by"])]


def test_gullible_llm_judge_is_caught(tmp_path, runs_dir):
    with GullibleJudge() as srv:
        cfg = demo_variant(
            tmp_path, datagen__max_prompts=6, judge__llm__backend="openai", judge__llm__base_url=srv.url,
            judge__llm__model="gullible", judge__llm__rpm=100_000, judge__llm__backoff_s=0.02,
            judge__llm__api_key_env="ABA_TEST_SECRET", judge__llm__concurrency=2,
        )
        proc = aba("run", str(cfg), "--stages", "datagen,judge", env={"ABA_TEST_SECRET": "sk-test"})
        assert proc.returncode == 0, proc.stderr[-2000:]
        run_id = run_id_of(proc)
        audit, health, events = _audit(run_id, runs_dir)
        assert set(audit["summary"]["fooled_by"]) == {"colon", "thought_process"}
        assert audit["degenerate/colon"]["reward"] == pytest.approx(0.95) and audit["degenerate/colon"]["percentile"] == 1.0
        assert not audit["degenerate/empty"]["above_median"]
        # Always "A": every verdict follows position, none survives the swap.
        assert audit["position"]["first_position_share"] == 1.0 and audit["position"]["consistent"] == 0.0
        assert health["judge_fooled"]["state"] == "alarm"
        assert [e.data["rule"] for e in events] == ["judge_fooled"] and events[0].data["first"]
        # The CLI runs the same audit again on demand and prints the same verdict.
        again = aba("audit-judge", run_id, env={"ABA_TEST_SECRET": "sk-test"})
    assert again.returncode == 0, again.stderr[-2000:]
    assert "colon" in again.stdout and "thought_process" in again.stdout and "first position" in again.stdout
