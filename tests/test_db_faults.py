"""The run database under faults, from the CLI and the panel: a damaged file is found and named (and recovered
into a new file), a full disk stops a stage with one line and leaves every reader reading."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
import time

import pytest
from textual.widgets import DataTable

from app.app import make_app
from engine.runner import supervisor as sup
from engine.store import RunStore
from tests.conftest import aba, write_config
from tests.diskfixtures import damage_page, fill, first_leaf_page, small_disk, table_page
from tests.uifixtures import make_fixture_run, wait_for

GOOD, BAD = "20260211-101500-good", "20260211-101600-hurt"


def _one_line(proc, code: int, *words: str) -> None:
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for w in words:
        assert w in proc.stderr, proc.stderr


@pytest.fixture
def two_runs(runs_dir):
    good, bad = make_fixture_run(runs_dir, GOOD), make_fixture_run(runs_dir, BAD)
    damage_page(bad / "run.db", table_page(bad / "run.db", "traces"))
    return good, bad


def test_a_damaged_run_is_named_by_every_command_and_hides_no_other(two_runs, runs_dir):
    good, bad = two_runs
    proc = aba("check", BAD)
    assert proc.returncode == 1 and "DAMAGED" in proc.stdout and "--repair" in proc.stdout, proc.stdout
    assert aba("check", GOOD).returncode == 0
    runs = aba("runs", "--json")
    assert runs.returncode == 0, runs.stderr
    rows = {r["id"]: r for r in json.loads(runs.stdout)}
    assert set(rows) == {GOOD, BAD} and "DAMAGED" in rows[BAD]["name"] and not rows[GOOD].get("damaged")
    status = aba("status", "--json")
    assert status.returncode == 0, status.stderr
    states = {r["id"]: r["state"] for r in json.loads(status.stdout)}
    assert states[BAD].startswith("DAMAGED") and not states[GOOD].startswith("DAMAGED")
    for args in (("status", BAD), ("traces", BAD), ("report", BAD), ("metrics", BAD, "--stage", "grpo"),
                 ("resume", BAD)):
        _one_line(aba(*args), 2, "damaged", "aba check --repair")


def test_damage_in_a_page_no_command_reads_is_still_found(runs_dir):
    run = make_fixture_run(runs_dir, BAD)
    with RunStore(run / "run.db") as s:
        for i in range(200):
            s.mark_call_failed(f"call-{i}", "x" * 100)
    damage_page(run / "run.db", table_page(run / "run.db", "llm_calls"))
    assert aba("check", BAD).returncode == 1
    _one_line(aba("status", BAD), 2, "damaged")


def test_repair_copies_what_can_be_read_and_keeps_the_original(two_runs):
    _, bad = two_runs
    before = hashlib.sha256((bad / "run.db").read_bytes()).hexdigest()
    proc = aba("check", "--repair", BAD)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert hashlib.sha256((bad / "run.db").read_bytes()).hexdigest() == before
    recovered = sorted(bad.glob("run.recovered-*.db"))
    assert len(recovered) == 1 and "traces" in proc.stdout and "LOST" in proc.stdout, proc.stdout
    conn = sqlite3.connect(recovered[0])
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    with RunStore(recovered[0], readonly=True) as s:  # a run database of this aba, with what could be read
        status = {r.name: r.status for r in s.stages()}
        assert [status[n] for n in ("datagen", "judge", "sft", "grpo")] == ["succeeded", "succeeded", "failed",
                                                                          "pending"]
        assert s.metric_series("grpo", "reward")[1] == list(range(1, 41))


async def test_the_panel_shows_a_damaged_run_as_damaged(two_runs, runs_dir):
    _, bad = two_runs
    bad_db = bad / "run.db"
    bad_db.write_bytes(bad_db.read_bytes()[: bad_db.stat().st_size // 2])  # truncated to half: nothing opens it
    app = make_app(BAD, runs_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        stages = app.screen.query_one("#stages", DataTable)
        await wait_for(pilot, lambda: app.model.problem is not None)
        await wait_for(pilot, lambda: stages.row_count > 0)
        cells = [stages.get_row_at(i) for i in range(stages.row_count)]
        assert all(c[1].plain != "not started" for c in cells) and "damaged" in cells[0][6].plain
        await pilot.press("f5")
        table = app.screen.query_one("#runs", DataTable)
        await wait_for(pilot, lambda: table.row_count == 2)
        names = sorted(str(table.get_row_at(i)[2]).strip() for i in range(2))  # one damaged, the other as it is
        assert sum("DAMAGED" in n for n in names) == 1 and "demo" in names


@pytest.mark.skipif(sys.platform == "win32", reason="tmpfs")
def test_a_full_disk_stops_the_stage_in_one_line_and_resume_continues(tmp_path, busy_env, monkeypatch):
    with small_disk(tmp_path, "24m") as disk:
        runs = disk / "runs"
        runs.mkdir()
        monkeypatch.setenv("ABA_RUNS_DIR", str(runs))
        monkeypatch.setenv("BUSY_STEPS", "400")
        monkeypatch.setenv("BUSY_DELAY", "0.02")
        run_dir = sup.create_run(write_config(tmp_path, '[run]\nstages = ["smoke"]\n'), runs)
        sup.launch(run_dir)
        deadline = time.monotonic() + 120
        while True:
            with RunStore(run_dir / "run.db", readonly=True) as s:
                if s.metric_series("smoke", "m1")[1][-1:] >= [20]:
                    break
            assert time.monotonic() < deadline
            time.sleep(0.2)
        filler = fill(disk)
        status = aba("status", run_dir.name)  # readers keep reading while the disk is full
        assert status.returncode == 0 and "Traceback" not in status.stderr, status.stderr
        rows = sup.wait(run_dir, timeout_s=120)
        smoke = next(r for r in rows if r.name == "smoke")
        assert smoke.status == "failed", smoke
        assert "disk holding" in smoke.reason and str(disk) in smoke.reason and "\n" not in smoke.reason
        status = aba("status", run_dir.name)
        assert status.returncode == 0 and "Traceback" not in status.stderr and "disk holding" in status.stdout
        for log in (run_dir / "smoke" / "worker.log", run_dir / "driver.log"):
            assert "Traceback" not in (log.read_text(errors="replace") if log.exists() else "")
        filler.unlink()
        proc = aba("resume", run_dir.name)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        with RunStore(run_dir / "run.db", readonly=True) as s:
            assert s.stage("smoke").status == "succeeded"
            steps = s.metric_series("smoke", "m1")[1]
        assert steps == list(range(400))  # one row per step across the two attempts


def test_repair_steps_past_a_table_whose_first_rows_cannot_be_read(runs_dir):
    """The first read of a table fails before any row (its first leaf is damaged); the rows after it are copied.
    (The fault soak found this: the step past the bad rows compared a missing last row with a number.)"""
    run = make_fixture_run(runs_dir, BAD)
    with RunStore(run / "run.db") as s:
        for i in range(200):
            s.mark_call_failed(f"call-{i}", "x" * 100)
    damage_page(run / "run.db", first_leaf_page(run / "run.db", "llm_calls"))
    proc = aba("check", "--repair", BAD)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    copied = next(ln for ln in proc.stdout.splitlines() if ln.strip().startswith("llm_calls:"))
    assert "LOST: some rows unreadable" in copied and 0 < int(copied.split(":")[1].split()[0]) < 200, proc.stdout


def test_a_damaged_inner_page_is_still_one_line(runs_dir):
    """SQLite heads its report with '*** in database main ***' inside the first row: still one line."""
    run = make_fixture_run(runs_dir, BAD)
    with RunStore(run / "run.db") as s:
        s.add_metric_rows([("sft", i, f"k{i % 7}", float(i), 0.0) for i in range(20_000)])
    pages = (run / "run.db").stat().st_size // 4096
    damage_page(run / "run.db", pages // 2)
    proc = aba("check", BAD)
    assert proc.returncode == 1 and len(proc.stdout.strip().splitlines()) == 2, proc.stdout
    _one_line(aba("status", BAD), 2, "damaged")
