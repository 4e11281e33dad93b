"""The Training screen at a glance, progress and ETA everywhere, piped CLI output, and the layout snapshots."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from app.app import make_app
from app.widgets.chart import PALETTE, Line, LineChart, is_flat
from app.widgets.trace_table import TraceTable
from app.widgets.vram import VramPanel
from engine.dims import DIMENSIONS, SHORT
from engine.progress import EtaMeter, eta_left, progress_cell
from engine.store import RunStore
from tests.conftest import ROOT
from tests.uifixtures import T0, make_fixture_run
from tests.uifixtures import wait_for as _wait_for



def _text(strips) -> str:
    return "\n".join("".join(seg.text for seg in s) for s in strips)


def test_chart_legend_is_whole_total_bold_on_top_and_flat_series_do_not_set_the_range():
    x = np.arange(50, dtype=float)
    lines = [Line(SHORT[d], x, 0.3 + 0.0004 * x * (i + 1), PALETTE[i]) for i, d in enumerate(DIMENSIONS)]
    lines[7] = Line(SHORT[DIMENSIONS[7]], x, np.ones(50), PALETTE[7])  # harm_avoidance = 1.0 throughout
    lines.insert(0, Line("reward", x, 0.4 + 0.001 * x, PALETTE[9], bold=True))
    chart = LineChart()
    chart.lines = lines
    for width in (60, 36):  # the reward chart at 120 and at 80 columns
        strips = chart.draw(width, 16)
        text = _text(strips)
        for ln in lines:
            assert ln.label + "=" in text, (width, ln.label)  # every key, never cut
        assert "HRM=1 flat" in text
    axis = text.split("\n")[0]
    assert float(axis.split("┤")[0]) < 0.6  # the top of the axis follows the moving lines, not HRM's 1.0
    bold = [seg for s in strips for seg in s if seg.style and seg.style.bold and "\u2800" <= seg.text <= "\u28ff"]
    assert bold and all(seg.style.color.name == PALETTE[9] for seg in bold)
    assert len(set(PALETTE)) == len(PALETTE) and is_flat(np.ones(3)) and not is_flat(x)


def _with_stage(run, name: str, status: str) -> None:
    """A stage shown as running: its pid is this (live) test process, its heartbeat fresh."""
    import os

    with RunStore(run / "run.db") as s:
        s._conn.execute("UPDATE stages SET status = ?, selected = 1, attempts = 1, started = ?, progress = 12,"
                        " progress_total = 40, pid = ? WHERE name = ?", (status, T0, os.getpid(), name))
        s.heartbeat(name, os.getpid())


async def test_training_follows_the_running_stage_and_tabs_only_over_the_run(runs_dir):
    run = make_fixture_run(runs_dir)
    _with_stage(run, "sft", "running")
    app = make_app(run.name, runs_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f3")
        screen = app.screen
        await _wait_for(pilot, lambda: screen.stage == "sft")  # the running stage, not grpo
        assert screen.run_stages(app.model) == ["sft", "grpo"]
        seen = []
        for _ in range(4):
            await pilot.press("tab")
            seen.append(screen.stage)
        assert seen == ["grpo", "sft", "grpo", "sft"] and not screen.follow
        log = screen.query_one("#training-log")
        assert log.size.height - 2 >= 5  # the log keeps five lines inside its border
        title = "".join(seg.text for seg in screen.query_one("#training-title").render_line(0))
        assert "12/40" in title


async def test_no_gpu_shows_ram_and_cpu_labelled(runs_dir):
    run = make_fixture_run(runs_dir)
    app = make_app(run.name, runs_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f3")
        panel = app.screen.query_one("#vram")
        await _wait_for(pilot, lambda: "no NVIDIA GPU" in str(panel.border_title), timeout=5)
        facts = str(panel.query_one("#vram-facts").render())
        assert "system RAM" in facts and "CPU" in facts and "stage process" in facts


def test_eta_from_the_stage_own_rate_and_finished_shows_whole():
    meter = EtaMeter()
    assert meter.update(0, 100, 0.0) is None
    for i in range(1, 11):
        eta = meter.update(i, 100, i * 0.5)  # 2 per second
    assert eta == pytest.approx(45.0)
    assert meter.update(0, 3, 10.0) is None  # a new job (the demo model build done, training starts)
    assert progress_cell("succeeded", 95, 96, None) == "96/96"
    assert progress_cell("running", 40, 96, 80.0) == "40/96  ETA 1m20s"


def test_context_progress_writes_the_eta(runs_dir):
    from engine import config as config_mod
    from engine.context import StageContext

    run = make_fixture_run(runs_dir)
    with RunStore(run / "run.db") as store:
        ctx = StageContext("sft", run, config_mod.load(run / "config.toml"), store)
        store._conn.execute("UPDATE stages SET status = 'running', started = ? WHERE name = 'sft'", (time.time(),))
        for i in range(1, 6):
            ctx.progress(i, 10)
            time.sleep(0.3)
        eta = eta_left(store, store.stage("sft"))
        metrics = {r.key for r in store.metrics_since(0, "sft")}
    assert eta is not None and 0.5 < eta < 5.0
    assert not metrics  # wall-clock figures stay out of the metric series (same seed, same series)


def test_piped_cli_output_never_cuts_ids(runs_dir):
    run = make_fixture_run(runs_dir, run_id="20260211-101500-a-very-long-run-name-that-would-be-cut")
    env = {"ABA_RUNS_DIR": str(runs_dir), "COLUMNS": "40"}
    for args in (["status"], ["status", run.name], ["traces", run.name]):
        out = subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, cwd=ROOT,
                             env={**__import__("os").environ, **env}, check=True).stdout
        assert "…" not in out and "┃" not in out, out
        if args == ["status"]:
            assert run.name in out.split()
    rows = [ln.split() for ln in out.splitlines()[1:] if ln.strip()]
    assert len(rows) == 12 and all(r[0].isdigit() for r in rows)


@pytest.mark.parametrize("room", ["training", "traces"])
@pytest.mark.parametrize("size", [(120, 40), (80, 24)], ids=["120x40", "80x24"])
def test_snapshot_sizes(snap_compare, runs_dir, monkeypatch, room, size):
    """Traces and Training at 120x40 and 80x24 on a fixture run with fixed ids, times and machine figures."""
    fixed = {"sys_used_mb": 6144.0, "sys_total_mb": 24576.0, "sys_cpu": 37.0, "cores": 2}
    monkeypatch.setattr("app.screens.training.sample_host", lambda pid: dict(fixed))
    make_fixture_run(runs_dir)
    app = make_app("20260211-101500-snap", runs_dir)
    key = {"training": "f3", "traces": "f4"}[room]

    async def before(pilot):
        await _wait_for(pilot, lambda: bool(app.model.stages) and app.model.get("grpo", "reward") is not None)
        await pilot.press(key)
        if room == "training":  # composed, the charts drawn (all 40 steps) and a host sample arrived
            def ready() -> bool:
                vram, chart = app.screen.query(VramPanel), app.screen.query("#chart-reward")
                return bool(vram) and vram.first().border_title.startswith("RAM") and bool(chart) \
                    and bool(chart.first().lines) and len(chart.first().lines[0].steps) == 40
        else:  # composed, the ids read and the first trace drawn
            def ready() -> bool:
                table = app.screen.query(TraceTable)
                return bool(table) and len(table.first().ids) == 12 and app.screen.view is not None \
                    and bool(app.screen.query(".trace-chunk"))
        await _wait_for(pilot, ready)
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=before)


def test_demo_model_build_reports_progress():
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from engine.models.loading import TINY_QWEN3, _warm_up, load_tokenizer

    tok = load_tokenizer("demo:tiny-qwen3")
    model = Qwen3ForCausalLM(Qwen3Config(vocab_size=len(tok), pad_token_id=tok.pad_token_id, **TINY_QWEN3))
    seen = []
    _warm_up(model, tok, 0, steps=3, progress=lambda done, total, label: seen.append((done, total, label)))
    assert [(d, t) for d, t, _ in seen] == [(1, 3), (2, 3), (3, 3)] and "demo model" in seen[0][2]


def test_worker_threads_are_its_share_unless_configured(monkeypatch):
    import os

    from engine.runner import threads

    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    assert threads.thread_share(0, 1) == 8 and threads.thread_share(0, 4) == 2 and threads.thread_share(3, 4) == 3
    assert threads.thread_share(0, 16) == 1
    for var in threads.THREAD_VARS:
        monkeypatch.delenv(var, raising=False)
    assert threads.cap_threads(0, 2) == 4 and os.environ["OMP_NUM_THREADS"] == "4"
    import torch

    before = torch.get_num_threads()
    try:
        assert threads.cap_threads(2) == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_openmp_threads_wait_passively_unless_the_user_says_otherwise():
    """A fresh interpreter that imports the engine (as every stage worker does before torch) runs torch's OpenMP pool
    with OMP_WAIT_POLICY=PASSIVE; a value the user set is kept. bench/cpu_contention.py measures why."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = "import engine, os, torch; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"
    out = subprocess.run([sys.executable, "-c", code], env=dict(env, OMP_WAIT_POLICY="ACTIVE"), cwd=ROOT,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ACTIVE"


def test_aba_run_prints_progress_and_eta(tmp_path, runs_dir, busy_env, monkeypatch):
    from tests.conftest import aba, write_config

    cfg = write_config(tmp_path, '[run]\nstages = ["smoke"]\n')
    proc = aba("run", str(cfg), env={"BUSY_STEPS": "100", "BUSY_DELAY": "0.1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("stage smoke: ") and "/100" in ln]
    assert any("ETA" in ln for ln in lines), proc.stdout
