"""Exactly once per attempt, in the store and the follower: a resumed attempt's rows replace the earlier attempt's
rows of the steps it redoes, and a panel that already drew those steps drops them."""

from __future__ import annotations

import sqlite3

from app.run_model import RunModel
from engine.runner.follow import Follower
from engine.store import MIGRATIONS, SCHEMA_VERSION, RunStore


def _resume(s: RunStore, stage: str) -> None:
    """What the driver does between two attempts (the first crashed)."""
    n = s.stage(stage).attempts
    s.end_attempt(stage, n, "crashed", "killed")
    with s._tx() as c:
        c.execute("UPDATE stages SET status = 'pending' WHERE name = ?", (stage,))
    s.start_attempt(stage, 1)


def test_a_resumed_attempt_replaces_the_steps_it_redoes(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    with RunStore(run / "run.db", create=True) as s:
        s.init_run("r", "r", "", ["grpo"], ["grpo"])
        s.start_attempt("grpo", 1)
        for step in range(1, 8):
            s.add_metrics("grpo", step, {"loss": step, "reward": step / 10})
            s.add_sample("grpo", step, "p", f"c{step}", {}, 0.1)
        s.event("grpo", "backend", "backend: standard")
        model, follower = RunModel(), Follower(run)
        model.reset(run)
        model.apply(follower.poll())
        assert model.get("grpo", "loss").view()[0].tolist() == list(range(1, 8))
        _resume(s, "grpo")  # from the checkpoint of step 4: steps 5.. are redone
        s.event("grpo", "backend", "backend: standard")
        for step in range(5, 10):
            s.add_metrics("grpo", step, {"loss": 100 + step, "reward": step})
            s.add_sample("grpo", step, "p", f"again {step}", {}, 0.2)
        assert s.metric_series("grpo", "loss")[1] == list(range(1, 10))
        assert s.metric_series("grpo", "loss")[2] == [1, 2, 3, 4, 105, 106, 107, 108, 109]
        assert sorted(r["step"] for r in s.samples("grpo", 100)) == list(range(1, 10))
        assert len(s.events("grpo", kind="backend")) == 1
        rows = s._q("SELECT step, attempt FROM metrics WHERE key = 'loss' ORDER BY step")
        assert [tuple(r) for r in rows] == [(1, 1), (2, 1), (3, 1), (4, 1), (5, 2), (6, 2), (7, 2), (8, 2), (9, 2)]
        delta = follower.poll()  # the panel had drawn 1..7 of attempt 1: it drops 5..7 and adds the new 5..9
        assert delta.restarts == {("grpo", "loss"): 5.0, ("grpo", "reward"): 5.0}
        model.apply(delta)
        steps, values = model.get("grpo", "loss").view()
        assert steps.tolist() == list(range(1, 10)) and values.tolist()[4:] == [105, 106, 107, 108, 109]
        follower.close()


def test_a_schema_2_database_is_migrated_with_attempt_0(tmp_path):
    db = tmp_path / "run.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode = WAL")
    for version, script in enumerate(MIGRATIONS[:2]):
        conn.executescript(script)
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(version + 1),))
    conn.execute("INSERT INTO metrics (stage, step, key, value, time) VALUES ('sft', 1, 'loss', 2.0, 0)")
    conn.commit()
    conn.close()
    with RunStore(db, readonly=True) as s:  # a reader of an older run migrates it first
        assert s.schema_version() == SCHEMA_VERSION
        assert [(r.step, r.value, r.attempt) for r in s.metrics_since(0)] == [(1, 2.0, 0)]
