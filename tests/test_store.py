"""Run database: round trips, incremental reads, concurrent writers, NaN as null, review history."""

from __future__ import annotations

import math
import multiprocessing as mp
import sqlite3
import threading

import pytest

from engine.dims import DIMENSIONS, equal_weights
from engine.store import SCHEMA_VERSION, RunStore, StoreError


def _store(tmp_path) -> RunStore:
    s = RunStore(tmp_path / "run.db", create=True)
    s.init_run("r1", "test", "c.toml", ["a", "b"], ["a"])
    return s


def test_schema_and_pragmas(tmp_path):
    s = _store(tmp_path)
    assert s.schema_version() == SCHEMA_VERSION
    assert s._q("PRAGMA journal_mode")[0][0] == "wal"
    assert s._q("PRAGMA busy_timeout")[0][0] >= 5000
    s.close()
    # Reopening migrates nothing and keeps data.
    s2 = RunStore(tmp_path / "run.db")
    assert [r.name for r in s2.stages()] == ["a", "b"]
    assert s2.stages()[0].selected and not s2.stages()[1].selected


def test_not_a_database(tmp_path):
    bad = tmp_path / "run.db"
    bad.write_text("this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a run database"):
        RunStore(bad)
    with pytest.raises(StoreError, match="no run database"):
        RunStore(tmp_path / "missing.db")


def test_stage_lifecycle_and_attempts(tmp_path):
    s = _store(tmp_path)
    assert s.start_attempt("a", 123) == 1
    assert s.stage("a").status == "running"
    assert s.end_attempt("a", 1, "failed", "boom", 1)
    assert s.end_attempt("a", 1, "crashed") is False
    assert s.reset_stage("a")
    assert s.start_attempt("a", 124) == 2
    assert s.end_attempt("a", 2, "succeeded")
    att = s.attempts("a")
    assert [(a["n"], a["status"]) for a in att] == [(1, "failed"), (2, "succeeded")]


def test_metrics_round_trip_nan_and_incremental(tmp_path):
    s = _store(tmp_path)
    s.add_metrics("a", 1, {"loss": 1.5, "kl": math.nan, "x": math.inf})
    rows = s.metrics_since(0)
    assert {r.key: r.value for r in rows} == {"loss": 1.5, "kl": None, "x": None}
    last = rows[-1].id
    s.add_metrics("a", 2, {"loss": 1.0})
    s.add_metrics("b", 2, {"loss": 9.0})
    newer = s.metrics_since(last)
    assert [(r.stage, r.step, r.value) for r in newer] == [("a", 2, 1.0), ("b", 2, 9.0)]
    assert [r.value for r in s.metrics_since(last, stage="b")] == [9.0]
    ids, steps, values = s.metric_series("a", "loss")
    assert steps == [1, 2] and values == [1.5, 1.0]


def test_reader_follows_live_writer(tmp_path):
    """A reader polling 'rows newer than N' sees every row a writer in another process commits, once."""
    s = _store(tmp_path)
    proc = mp.get_context("spawn").Process(target=_writer, args=(str(tmp_path / "run.db"), 300))
    proc.start()
    reader = RunStore(tmp_path / "run.db")
    seen: list[int] = []
    last = 0
    while proc.is_alive() or last < reader.last_metric_id():
        for row in reader.metrics_since(last):
            seen.append(row.step)
            last = row.id
    proc.join()
    assert seen == list(range(300))
    s.close()


def _writer(path: str, n: int) -> None:
    w = RunStore(path)
    for i in range(n):
        w.add_metrics("a", i, {"loss": float(i)})


def test_two_writers_lose_nothing(tmp_path):
    s = _store(tmp_path)
    procs = [mp.get_context("spawn").Process(target=_writer, args=(str(tmp_path / "run.db"), 400)) for _ in range(2)]
    for p in procs:
        p.start()
    # A third writer in this process, as the UI writing human edits would be.
    t = threading.Thread(target=lambda: [s.log("a", f"ui {i}") for i in range(200)])
    t.start()
    for p in procs:
        p.join()
    t.join()
    assert s._q("SELECT COUNT(*) FROM metrics")[0][0] == 800
    assert len(s.logs_since(0)) == 200
    assert s.integrity_check() == "ok"


def _trace(s: RunStore, key: str = "k1", scores: dict | None = None) -> int:
    pid = s.add_prompt("p1", "safety", [{"role": "user", "content": "hi"}], "test")
    tid = s.add_trace({"call_key": key, "prompt_id": pid, "category": "safety", "tier": "chosen", "idx": 0,
                       "reasoning": "r", "answer": "a", "backend": "offline"})
    assert tid
    if scores:
        s.set_judge_scores(tid, scores, "heuristic", None, False, equal_weights())
    return tid


def test_trace_exactly_once(tmp_path):
    s = _store(tmp_path)
    _trace(s)
    assert s.add_trace({"call_key": "k1", "reasoning": "", "answer": ""}) is None
    assert s.trace_count() == 1


def test_human_edits_beside_judge_and_undo(tmp_path):
    s = _store(tmp_path)
    scores = {d: 0.5 for d in DIMENSIONS}
    tid = _trace(s, scores=scores)
    w = equal_weights()
    s.edit_score(tid, "helpfulness", 0.9, w)
    s.edit_score(tid, "helpfulness", 1.0, w)
    t = s.trace(tid)
    assert t["judge"]["helpfulness"] == 0.5  # the judge's score is never overwritten
    assert t["human"] == {"helpfulness": 1.0} and t["effective"]["helpfulness"] == 1.0
    assert t["weighted"] == pytest.approx((8 * 0.5 + 1.0) / 9)
    assert s.undo_edit(tid, w) == {"dim": "helpfulness", "old": 0.9, "new": 1.0}
    assert s.trace(tid)["effective"]["helpfulness"] == 0.9
    s.undo_edit(tid, w)
    assert s.trace(tid)["human"] == {} and s.trace(tid)["weighted"] == pytest.approx(0.5)
    edits = s.score_edits(tid)
    assert len(edits) == 2 and all(e["undone"] for e in edits)
    with pytest.raises(StoreError, match="within 0..1"):
        s.edit_score(tid, "helpfulness", 1.5, w)


def test_judge_failed_keeps_raw(tmp_path):
    s = _store(tmp_path)
    tid = _trace(s)
    s.mark_judge_failed(tid, "openai", "not json at all", "no JSON object")
    t = s.trace(tid)
    assert t["judge_failed"] and t["judge_raw"] == "not json at all" and t["effective"] is None


def test_integrity_after_many_transactions(tmp_path):
    s = _store(tmp_path)
    s.add_metric_rows(("a", i, "k", float(i), 0.0) for i in range(10_000))
    assert s.integrity_check() == "ok"
    with pytest.raises(sqlite3.IntegrityError):
        with s._tx() as c:
            c.execute("INSERT INTO stages (name, position) VALUES ('a', 0)")
    assert len(s.stages()) == 2
