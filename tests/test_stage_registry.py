"""Adding a stage is one module plus one registry entry: the new stage runs and shows in `aba status`, the pipeline
screen and `aba report`, with nothing else edited."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT, aba, run_id_of, write_config

# The registry entry: ABA_STAGE_MODULES is the registry's documented way to register a stage without editing
# engine/registry.py (every process of the run inherits it, so the worker finds the module too).
ENV = {"ABA_STAGE_MODULES": "tally=tests.stages.tally",
       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

PILOT = r"""
import asyncio, sys
from textual.widgets import DataTable
from app.app import make_app

async def main(run_id, runs):
    app = make_app(run_id, runs)
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.screen.query_one("#stages", DataTable)
        for _ in range(300):
            await pilot.pause(0.05)
            rows = [table.get_row_at(i) for i in range(table.row_count)]
            if any(str(r[0]) == "tally" and r[1].plain == "succeeded" for r in rows):
                break
        for r in rows:
            print(str(r[0]), r[1].plain)

asyncio.run(main(sys.argv[1] if sys.argv[1] != "-" else None, sys.argv[2]))
"""


def _pilot(run_id: str | None, runs_dir) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", PILOT, run_id or "-", str(runs_dir)], capture_output=True, text=True,
                          cwd=ROOT, env=dict(os.environ, **ENV), timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_a_new_stage_shows_in_status_pipeline_and_report(tmp_path, runs_dir):
    cfg = write_config(tmp_path, '[run]\nstages = ["datagen", "tally"]\n')
    proc = aba("run", str(cfg), "--stages", "tally", env=ENV, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "stage tally: succeeded" in proc.stdout and "[tally] tally: counting to three" in proc.stdout
    run_id = run_id_of(proc)

    status = json.loads(aba("status", run_id, "--json", env=ENV).stdout)
    assert {"name": "tally", "status": "succeeded"}.items() <= next(s for s in status["stages"] if s["name"] == "tally").items()
    assert "tally" in aba("status", run_id, env=ENV).stdout

    assert "tally succeeded" in _pilot(run_id, runs_dir)
    assert "tally not started" in _pilot(None, runs_dir)  # no run open: the registry's list of stages

    report = aba("report", run_id, env=ENV)
    assert report.returncode == 0, report.stderr
    text = (runs_dir / run_id / "report" / "report.md").read_text(encoding="utf-8")
    assert "| tally | succeeded | 1 |" in text


def test_an_unregistered_stage_is_refused(tmp_path):
    cfg = write_config(tmp_path, '[run]\nstages = ["datagen"]\n')
    proc = aba("run", str(cfg), "--stages", "tally", timeout=60)  # no registry entry
    assert proc.returncode == 2 and "tally" in proc.stderr and "Traceback" not in proc.stderr
