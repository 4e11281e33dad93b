"""Sweeps and the run queue, driven from the CLI: one-line errors, names, one run at a time, a failed run does not
stop the queue, a killed queue driver (and a "reboot": every driver and worker killed) resumes on the next command.
The stage is the test-only busy stage (fast), so these take seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from engine.runner import supervisor as sup
from engine.store import RunStore
from engine.sweep import queue as q
from engine.sweep import sweeps
from engine.sweep.grid import plan
from tests.conftest import DEMO, aba

BUSY = {"BUSY_STEPS": "30", "BUSY_DELAY": "0.05"}


@pytest.mark.parametrize("args, says", [
    (["--grid", "grpo.learnin_rate=1e-3,1e-2"], "unknown config key (did you mean 'grpo.learning_rate'?)"),
    (["--grid", "grpo.max_steps=5,many"], "grpo.max_steps=many: expected an integer"),
    (["--grid", "grpo.reward_weights.entropy_reduction=0.1,-1"], "weights must be >= 0"),
    (["--grid", "grpo.learning_rate="], "no values"),
    ([], "empty sweep"),
    (["--grid", "run.seed=" + ",".join(map(str, range(40))), "--grid", "grpo.max_steps=" + ",".join(map(str, range(1, 27)))],
     "1040 runs (over 1000)"),
    (["--grid", "grpo.learning_rate=1e-3", "--data-from", "20990101-000000-none"], "no run '20990101-000000-none'"),
    (["--grid", "grpo.learning_rate=1e-3..1e-1"], "sampled only with --random N"),
])
def test_bad_sweep_input_is_one_line_and_makes_nothing(runs_dir, args, says):
    (runs_dir / "20200101-000000-aaaa").mkdir()  # a runs folder that is not empty, so "no run X" is the message
    proc = aba("sweep", str(DEMO), *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not sup.list_run_dirs(runs_dir) and not (runs_dir / "queue.json").exists()


def test_grid_product_names_what_differs_and_weights_are_ordinary_keys():
    plans, keys = plan([DEMO], ["grpo.reward_weights.entropy_reduction=0.1,0.5", "grpo.learning_rate=1e-3,1e-2"], [],
                       n_random=None, sweep_id="swX")
    assert keys == ["grpo.reward_weights.entropy_reduction", "grpo.learning_rate"]
    assert [p.name for p in plans] == [
        "demo swX entropy_reduction=0.1 learning_rate=0.001", "demo swX entropy_reduction=0.1 learning_rate=0.01",
        "demo swX entropy_reduction=0.5 learning_rate=0.001", "demo swX entropy_reduction=0.5 learning_rate=0.01"]
    w = plans[2].cfg.grpo.reward_weights
    assert w["entropy_reduction"] == 0.5 and w["calibrated_uncertainty"] == 0.2 and len(w) == 9  # the rest kept
    assert plans[1].cfg.grpo.learning_rate == 1e-2
    sampled, _ = plan([DEMO], ["grpo.learning_rate=1e-4..1e-2:log", "grpo.max_steps=5..9"], [], n_random=5, sweep_id="s")
    again, _ = plan([DEMO], ["grpo.learning_rate=1e-4..1e-2:log", "grpo.max_steps=5..9"], [], n_random=5, sweep_id="s")
    assert len(sampled) == 5 and [p.params for p in sampled] == [p.params for p in again]  # seeded by run.seed
    assert all(1e-4 <= p.cfg.grpo.learning_rate <= 1e-2 and 5 <= p.cfg.grpo.max_steps <= 9 for p in sampled)


def _setup(runs_dir, n: int, fail: int | None = None) -> list[str]:
    """A sweep of n busy runs created and queued through the engine API (the CLI's own calls), no driver yet."""
    plans, keys = plan([DEMO], ["run.seed=" + ",".join(str(i) for i in range(1, n + 1))], [], n_random=None,
                       sweep_id="swQ")
    made = sweeps.create(runs_dir, "swQ", plans, keys, stages=["smoke"], data_from=None, objective="heldout")
    if fail is not None:
        (made[fail] / "busy.json").write_text(json.dumps({"fail_at": 3}))
    q.add(runs_dir, [d.name for d in made])
    return [d.name for d in made]


def _wait_queue_empty(runs_dir, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = q.read(runs_dir)
        if not any(e["state"] in q.ACTIVE for e in state["entries"]) and not q.driver_alive(state):
            return state
        time.sleep(0.3)
    raise AssertionError(f"queue not done: {q.read(runs_dir)}")


def _spans(runs_dir, ids):
    out = []
    for rid in ids:
        with RunStore(runs_dir / rid / "run.db", readonly=True) as s:
            row = s.stage("smoke")
            out.append((row.started, row.ended, row.status))
    return out


def _wait(cond, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_queue_runs_one_at_a_time_in_order_and_a_failed_run_does_not_stop_it(runs_dir, busy_env, monkeypatch):
    for k, v in BUSY.items():
        monkeypatch.setenv(k, v)
    ids = _setup(runs_dir, 3, fail=1)
    moved = q.move(runs_dir, ids[2], 1)  # the third goes first
    assert moved == 1
    proc = aba("queue")  # any aba command starts the driver for queued work
    assert proc.returncode == 0, proc.stderr
    assert all(i in proc.stdout for i in ids)
    state = _wait_queue_empty(runs_dir)
    result = {e["run"]: e["result"] for e in state["entries"]}
    assert result == {ids[0]: "succeeded", ids[1]: "failed", ids[2]: "succeeded"}
    spans = _spans(runs_dir, [ids[2], ids[0], ids[1]])  # the queue's order after the move
    for (_, end, _), (start, _, _) in zip(spans, spans[1:]):
        assert start >= end, spans  # one at a time on a CPU: each starts after the previous ended
    assert "queued" not in aba("queue").stdout


def _run_pids(runs_dir, rid):
    with RunStore(runs_dir / rid / "run.db", readonly=True) as s:
        info, row = s.run_info(), s.stage("smoke")
    return info.get("driver_pid"), row.pid


def test_killed_queue_driver_and_a_reboot_resume_on_the_next_command(runs_dir, busy_env, monkeypatch):
    monkeypatch.setenv("BUSY_STEPS", "60")
    monkeypatch.setenv("BUSY_DELAY", "0.05")
    ids = _setup(runs_dir, 2)
    assert aba("queue").returncode == 0
    _wait(lambda: _run_pids(runs_dir, ids[0])[1] is not None)
    driver = q.read(runs_dir)["driver"]["pid"]
    os.kill(driver, signal.SIGKILL)  # the queue driver dies; the run it started goes on (it is detached)
    _wait(lambda: not q.driver_alive(q.read(runs_dir)))
    # A "reboot": the run's own driver and its worker die too, mid-stage.
    run_driver, worker = _run_pids(runs_dir, ids[0])
    for pid in (run_driver, worker):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert q.read(runs_dir)["entries"][0]["state"] == "running"
    proc = aba("queue", "--json")  # the next command finds queued work and no driver: starts one
    assert proc.returncode == 0, proc.stderr
    state = _wait_queue_empty(runs_dir)
    by_run = {e["run"]: e for e in state["entries"]}
    assert by_run[ids[0]]["result"] == "succeeded" and by_run[ids[0]]["retries"] == 1  # resumed once
    assert by_run[ids[1]]["result"] == "succeeded"
    with RunStore(runs_dir / ids[0] / "run.db", readonly=True) as s:
        assert [a["status"] for a in s.attempts("smoke")] == ["crashed", "succeeded"]


def test_queue_cancel_move_add_from_the_cli(runs_dir, busy_env, monkeypatch):
    monkeypatch.setenv("BUSY_STEPS", "2000")
    monkeypatch.setenv("BUSY_DELAY", "0.05")
    ids = _setup(runs_dir, 3)
    assert aba("queue").returncode == 0
    _wait(lambda: _run_pids(runs_dir, ids[0])[1] is not None)
    proc = aba("queue", "cancel", ids[2])
    assert proc.returncode == 0 and "cancelled" in proc.stdout, proc.stderr
    assert aba("queue", "add", ids[2]).returncode == 0
    proc = aba("queue", "move", ids[2], "1")
    assert proc.returncode == 0 and "#1" in proc.stdout, proc.stderr
    listed = json.loads(aba("queue", "--json").stdout)["entries"]
    assert [(e["run"], e["state"]) for e in listed] == [(ids[0], "running"), (ids[2], "queued"), (ids[1], "queued")]
    table = aba("queue").stdout
    assert "queued #1" in table and "queued #2" in table
    proc = aba("queue", "move", ids[0], "1")
    assert proc.returncode == 2 and "not queued" in proc.stderr
    for rid in (ids[1], ids[2], ids[0]):  # the running one last: cancel asks it to stop like `aba cancel`
        assert aba("queue", "cancel", rid).returncode == 0
    state = _wait_queue_empty(runs_dir)
    assert {e["state"] for e in state["entries"]} == {"cancelled"}


async def test_runs_screen_shows_queued_runs_in_their_order(runs_dir):
    from textual.widgets import DataTable

    from app.app import make_app
    from engine.runner.procs import process_started

    ids = _setup(runs_dir, 3)
    q.move(runs_dir, ids[2], 1)
    with q.locked(runs_dir) as state:  # a live driver holds the queue (this process), so the panel starts none
        state["driver"] = {"pid": os.getpid(), "started": process_started(os.getpid())}
        next(e for e in state["entries"] if e["run"] == ids[0])["state"] = "running"
    app = make_app(None, runs_dir)
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.press("f5")
        table = app.screen.query_one("#runs", DataTable)

        from app.screens.runs import COLUMNS

        name_col, stages_col = COLUMNS.index("name"), COLUMNS.index("stages")

        def cells():
            return {key.value: (str(table.get_row(key)[name_col]).strip(), str(table.get_row(key)[stages_col]).strip())
                    for key in list(table.rows)}

        from tests.uifixtures import wait_for

        await wait_for(pilot, lambda: len(cells()) == 3)
        shown = cells()
    assert shown[ids[0]][1].startswith("[running]")
    assert shown[ids[2]][1].startswith("[queued #1]") and shown[ids[1]][1].startswith("[queued #2]")
    assert all("swQ" in name for name, _ in shown.values())  # the sweep's runs are marked by its id
    assert q.read(runs_dir)["driver"]["pid"] == os.getpid()


def test_sweep_report_ranks_with_intervals_ties_and_writes_the_best_config(runs_dir):
    """Three runs of a sweep with eval results written through the store: one clearly worse, two the data cannot
    tell apart. The report ranks them, pairs the held-out differences by prompt, and writes the best config."""
    import random

    from engine import config as config_mod
    from engine.dims import DIMENSIONS, weighted_score

    plans, keys = plan([DEMO], ["grpo.reward_weights.entropy_reduction=0.1,0.3,0.5"], [], n_random=None, sweep_id="swR")
    made = sweeps.create(runs_dir, "swR", plans, keys, stages=["eval"], data_from=None, objective="heldout")
    rng = random.Random(0)
    base = [rng.uniform(0.3, 0.7) for _ in range(12)]
    shift = {0: -0.25, 1: 0.0, 2: 0.004}  # 0.1: worse; 0.3 and 0.5 within noise of each other
    for i, d in enumerate(made):
        w = plans[i].cfg.grpo.reward_weights
        with RunStore(d / "run.db") as s:
            for k, b in enumerate(base):
                scores = {dim: min(1.0, max(0.0, b + shift[i] + rng.uniform(-0.03, 0.03))) for dim in DIMENSIONS}
                s.put_result("eval", "heldout", f"grpo/{k}", {"model": "grpo", "prompt": f"p{k}", "output": "x",
                                                              "scores": scores, "weighted": weighted_score(scores, w)})
    proc = aba("sweep-report", "swR", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    order = [r["params"]["grpo.reward_weights.entropy_reduction"] for r in out["runs"]]
    assert order[-1] == 0.1 and [r["rank"] for r in out["runs"]] == [1, 2, 3]
    worst = out["runs"][-1]
    assert worst["vs_best"]["hi"] < 0 and worst["id"] not in out["tied_with_best"]
    assert out["runs"][1]["id"] in out["tied_with_best"] and out["runs"][1]["vs_best"]["lo"] <= 0 <= out["runs"][1]["vs_best"]["hi"]
    for r in out["runs"]:
        assert r["lo"] < r["value"] < r["hi"] and r["n"] == 12
    best = config_mod.load(out["best_config"])
    assert best.grpo.reward_weights["entropy_reduction"] == order[0]
    assert open(out["plot"], "rb").read(4) == b"\x89PNG"
    assert aba("sweep-report", "swZ").returncode == 2


def test_configs_compare_whole_configs_crossed_with_the_grid(tmp_path):
    from tests.conftest import demo_variant

    b = demo_variant(tmp_path, grpo__beta=0.1)
    b = b.rename(tmp_path / "strategy_b.toml")
    plans, _ = plan([DEMO, b], ["grpo.learning_rate=1e-3,1e-2"], [], n_random=None, sweep_id="swC")
    assert [p.params.get("config") for p in plans] == ["demo", "demo", "strategy_b", "strategy_b"]
    assert plans[0].name == "demo swC demo learning_rate=0.001" and plans[3].cfg.grpo.beta == 0.1
    assert len(plan([DEMO, b], [], [], n_random=None, sweep_id="s")[0]) == 2  # two configs alone are a sweep
