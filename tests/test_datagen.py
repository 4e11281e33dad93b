"""Datagen and judge stages: tiers, exactly-once under faults and kills, judge repairs, secrets, review data."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections import Counter

import pytest

from engine.runner import supervisor as sup
from engine.dims import DIMENSIONS, TIERS, equal_weights
from engine.evaluation.agreement import judge_agreement, kendall_tau_b, spearman
from engine.store import RunStore
from tests.conftest import aba, copy_run, demo_variant, run_id_of
from tests.fake_openai import FakeOpenAI


def _traces(run_id: str) -> list[dict]:
    proc = aba("traces", run_id, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_offline_datagen_and_judge(demo_judged_run, runs_dir):
    proc, run_dir = demo_judged_run  # `aba demo --stages datagen,judge`, once per session
    assert proc.returncode == 0, proc.stderr[-2000:]
    copy_run(run_dir, runs_dir)
    rows = _traces(run_id_of(proc))
    assert {r["tier"] for r in rows} == set(TIERS)
    assert {r["category"] for r in rows} == {"safety", "complexity", "multi_turn", "conflict", "calibration"}
    assert all(r["offline"] and r["judged"] and not r["judge_failed"] for r in rows)
    for r in rows:
        assert set(r["judge"]) == set(DIMENSIONS) and all(0 <= v <= 1 for v in r["judge"].values())
        assert r["reasoning"] and r["answer"] and "<think>" not in r["answer"]
    per_prompt = Counter(r["prompt_id"] for r in rows)
    assert set(per_prompt.values()) == {4}  # demo tier counts: 2 chosen, 1 adequate, 1 rejected
    mean = {t: sum(r["weighted"] for r in rows if r["tier"] == t) / sum(r["tier"] == t for r in rows) for t in TIERS}
    assert mean["chosen"] > mean["adequate"] > mean["rejected"]


def test_prompt_sets_are_real_and_sized():
    from engine.config import Config
    from engine.prompts import load_prompts
    from tests.conftest import ROOT

    cfg = Config()
    by_cat = load_prompts(ROOT / "data" / "prompts", list(cfg.datagen.category_targets))
    assert sum(cfg.datagen.category_targets.values()) == 500
    for cat, items in by_cat.items():
        assert len(items) >= 20, cat
    for p in by_cat["multi_turn"]:
        assert 3 <= sum(t["role"] == "user" for t in p.turns) <= 5


def test_near_duplicates_dropped():
    from engine.prompts import NearDuplicateFilter

    f = NearDuplicateFilter()
    u = lambda s: [{"role": "user", "content": s}]  # noqa: E731
    assert f.add(u("How do I plan a garden with clay soil and partial shade?"))
    assert not f.add(u("how do I plan a garden with clay soil and partial shade?"))
    assert not f.add(u("How do I plan a garden with clay soil and partial shade, please?"))
    assert f.add(u("What will the inflation rate be next year?"))


def _openai_variant(tmp_path, url: str, **extra):
    extra = {"datagen__llm__concurrency": 6, **extra}
    return demo_variant(
        tmp_path, datagen__llm__backend="openai", datagen__llm__base_url=url, datagen__llm__model="fake",
        datagen__llm__timeout_s=0.5, datagen__llm__max_retries=8, datagen__llm__backoff_s=0.02, datagen__llm__rpm=100_000,
        datagen__llm__api_key_env="ABA_TEST_SECRET", judge__llm__backend="openai",
        judge__llm__base_url=url, judge__llm__model="fake-judge", judge__llm__timeout_s=0.5, judge__llm__rpm=100_000,
        judge__llm__backoff_s=0.02, judge__llm__api_key_env="ABA_TEST_SECRET", **extra,
    )


def test_30_percent_faults_every_trace_once_and_no_secret_leaks(tmp_path, runs_dir):
    secret = "sk-live-DO-NOT-STORE-4242"
    with FakeOpenAI(fault_rate=0.3, hang_s=0.8, seed=11) as srv:
        cfg = _openai_variant(tmp_path, srv.url, datagen__max_prompts=12)
        proc = aba("run", str(cfg), "--stages", "datagen,judge", env={"ABA_TEST_SECRET": secret})
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_id = run_id_of(proc)
    rows = _traces(run_id)
    run_dir = sup.resolve_run(run_id, runs_dir)
    with RunStore(run_dir / "run.db") as store:
        failed = store.failed_calls()
    # Every call ended as a trace or as an explicit failure; no call twice, no trace twice.
    assert len(rows) + len(failed) == 12 * 4
    keys = Counter((r["prompt_id"], r["tier"], r["idx"]) for r in rows)
    assert max(keys.values()) == 1
    assert all(r["judged"] for r in rows)
    assert all(h == f"Bearer {secret}" for h in srv.auth_headers)
    # The key never reaches the database, the logs or the frozen config.
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_kill_mid_datagen_then_resume_is_exactly_once(tmp_path, runs_dir):
    with FakeOpenAI(latency_s=0.05) as srv:
        cfg = _openai_variant(tmp_path, srv.url, datagen__max_prompts=20, datagen__llm__concurrency=2)
        run_dir = sup.start(cfg, runs_dir, ["datagen"])
        with RunStore(run_dir / "run.db") as store:
            deadline = time.monotonic() + 60
            while store.trace_count() < 15 and time.monotonic() < deadline:
                time.sleep(0.02)
            pid = store.stage("datagen").pid
        os.kill(pid, signal.SIGKILL)
        rows = sup.wait(run_dir, timeout_s=10)
        assert next(r for r in rows if r.name == "datagen").status == "crashed"
        with RunStore(run_dir / "run.db") as store:
            before = store.trace_count()
            assert store.integrity_check() == "ok"
        answered_before = len(srv.answered)
        sup.resume(run_dir)
        rows = sup.wait(run_dir, timeout_s=120)
    assert next(r for r in rows if r.name == "datagen").status == "succeeded"
    with RunStore(run_dir / "run.db") as store:
        assert store.trace_count() == 20 * 4
        keys = [r[0] for r in store._q("SELECT call_key FROM traces")]
    assert len(keys) == len(set(keys))
    # Resume made only the calls that were not finished (one or two may have been in flight at the kill).
    assert len(srv.answered) - answered_before <= 80 - before + 2


def test_malformed_judge_replies_repaired_retried_or_marked(tmp_path, runs_dir):
    good = json.dumps({d: 0.6 for d in DIMENSIONS})
    replies = [
        "```json\n" + good + "\n```",                          # repaired: fence
        "Sure! " + json.dumps({d: 6 for d in DIMENSIONS}),     # repaired: prose + rescaled
        "no json here", good,                                  # retried, then fine
        "nope", "still nope", "{bad",                          # three bad: judge_failed, raw kept
    ]
    with FakeOpenAI(judge_replies=replies) as srv:
        cfg = _openai_variant(tmp_path, srv.url, datagen__max_prompts=1, datagen__llm__concurrency=1,
                              judge__llm__concurrency=1, judge__attempts=3)
        proc = aba("run", str(cfg), "--stages", "datagen,judge")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = sorted(_traces(run_id_of(proc)), key=lambda r: r["id"])
    assert [r["judge_failed"] for r in rows] == [False, False, False, True]
    assert rows[0]["judge"]["helpfulness"] == 0.6 and not rows[0]["judge_rescaled"]
    assert rows[1]["judge_rescaled"] and rows[1]["judge"]["helpfulness"] == pytest.approx(0.6)
    assert rows[3]["judge"] is None and rows[3]["effective"] is None
    run_dir = sup.resolve_run(run_id_of(proc), runs_dir)
    with RunStore(run_dir / "run.db") as store:
        failed = store.trace(rows[3]["id"])
        assert failed["judge_raw"] == "{bad"
        calls = store._q("SELECT attempt, error FROM judge_calls WHERE trace_id = ? ORDER BY id", (rows[2]["id"],))
    assert [c[0] for c in calls] == [1, 2] and "no JSON object" in calls[0][1]


def test_bad_prompt_file_is_one_line(tmp_path):
    folder = tmp_path / "prompts"
    folder.mkdir()
    for cat in ("safety", "complexity", "multi_turn", "conflict", "calibration"):
        (folder / f"{cat}.jsonl").write_text(json.dumps({"turns": [{"role": "user", "content": "x"}]}) + "\n")
    (folder / "conflict.jsonl").write_text('{"turns": [{"role": "user", "content": "ok"}]}\n{"turns": [\n')
    cfg = demo_variant(tmp_path, datagen__prompts_dir=str(folder))
    proc = aba("run", str(cfg), "--stages", "datagen")
    assert proc.returncode == 2  # found when the run is made, before any stage runs
    assert "conflict.jsonl:2:" in proc.stderr and "invalid JSON" in proc.stderr and "Traceback" not in proc.stderr


def test_review_edits_agreement_and_exports(tmp_path, runs_dir, demo_judged_run):
    run_dir = copy_run(demo_judged_run[1], runs_dir)  # this test's own copy: it edits scores
    run_id = run_dir.name
    w = equal_weights()
    with RunStore(run_dir / "run.db") as store:
        ids = store.trace_ids()[:5]
        for i, tid in enumerate(ids):
            store.edit_score(tid, "helpfulness", 0.1 * i, w)
            store.set_reviewed(tid)
        agree = judge_agreement(store)
    assert agree["helpfulness"]["n"] == 5 and agree["entropy_reduction"]["n"] == 0
    assert agree["helpfulness"]["mae"] is not None
    rows = {r["id"]: r for r in _traces(run_id)}
    assert rows[ids[2]]["human"] == {"helpfulness": pytest.approx(0.2)} and rows[ids[2]]["reviewed"]
    assert rows[ids[2]]["effective"]["helpfulness"] == pytest.approx(0.2)
    assert rows[ids[2]]["judge"]["helpfulness"] != rows[ids[2]]["effective"]["helpfulness"]
    out = tmp_path / "exp"
    proc = aba("export-data", run_id, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    first = json.loads((out / "train.jsonl").read_text().splitlines()[0])
    assert first["messages"][-1]["role"] == "assistant" and first["messages"][-1]["content"].startswith("<think>")
    header = (out / "scores.csv").read_text().splitlines()[0].split(",")
    assert "judge_helpfulness" in header and "human_helpfulness" in header
    proc = aba("judge-agreement", run_id, "--json")
    assert json.loads(proc.stdout)["helpfulness"]["n"] == 5


def test_rank_statistics():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau_b([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert spearman([1], [1]) is None


def test_store_refuses_duplicate_call_key_directly(tmp_path):
    s = RunStore(tmp_path / "r.db", create=True)
    s.add_trace({"call_key": "k", "reasoning": "", "answer": ""})
    with pytest.raises(sqlite3.IntegrityError):
        with s._tx() as c:
            c.execute("INSERT INTO traces (call_key) VALUES ('k')")


def test_expand_a_category_to_its_target_without_duplicates(tmp_path, runs_dir):
    with FakeOpenAI() as srv:
        cfg = _openai_variant(tmp_path, srv.url, datagen__expand=True, datagen__category_targets={"safety": 26},
                              datagen__max_prompts=0)
        proc = aba("run", str(cfg), "--stages", "datagen")
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = sup.resolve_run(run_id_of(proc), runs_dir)
    with RunStore(run_dir / "run.db") as store:
        prompts = store.prompts("safety")
        traces = store.trace_count()
    generated = [p for p in prompts if p["source"].startswith("generated")]
    assert len(prompts) == 26 and len(generated) == 4
    texts = [p["turns"][-1]["content"] for p in prompts]
    assert len(set(texts)) == len(texts)  # the repeat and the near-duplicate of a shipped prompt were dropped
    assert traces == 26 * 4
