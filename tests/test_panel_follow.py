"""Every stage can be watched: the panel follows a run started from the CLI, and its live log keeps every line."""

from __future__ import annotations

import html
import re
import sys
import time

import pytest
from textual.widgets import RichLog

from app.app import make_app
from engine.store import RunStore
from tests.conftest import aba, run_id_of, write_config
from tests.uifixtures import wait_for

CFG = '[run]\nstages = ["smoke"]\n'


def _held(app) -> str:
    log = app.screen.query_one("#pipeline-log", RichLog)
    return "\n".join(strip.text for strip in log.lines)


def _painted(app) -> str:
    """What the screen shows (a line the log holds but never repainted does not count)."""
    return html.unescape(re.sub(r"<[^>]+>", "", app.export_screenshot())).replace("\xa0", " ")


@pytest.mark.skipif(sys.platform == "win32", reason="the busy stage's timing is tuned for POSIX")
async def test_a_cli_run_is_followed_and_its_failure_reaches_the_log_pane_within_a_second(tmp_path, runs_dir,
                                                                                         busy_env, monkeypatch):
    monkeypatch.setenv("BUSY_STEPS", "100")
    monkeypatch.setenv("BUSY_DELAY", "0.1")
    monkeypatch.setenv("BUSY_FAIL_AT", "19")  # about 2 s after the stage starts
    app = make_app(None, runs_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        assert app.model.run_dir is None
        proc = aba("run", str(write_config(tmp_path, CFG)), "--detach", timeout=60)
        run_id = run_id_of(proc)
        # The panel had no run open: the run started from the CLI opens by itself.
        await wait_for(pilot, lambda: app.model.run_dir is not None and app.model.run_dir.name == run_id, timeout=30)
        title = app.screen.query_one("#run-title")
        await wait_for(pilot, lambda: "failed: RuntimeError: asked to fail" in _held(app), timeout=60)
        seen = time.time()
        with RunStore(runs_dir / run_id / "run.db", readonly=True) as store:
            row = store.stage("smoke")
            line = [r for r in store.logs_since(0) if r.message == "failed: RuntimeError: asked to fail"][0]
        assert row.status == "failed"
        assert seen - line.time <= 1.0, f"the failure line reached the log pane {seen - line.time:.2f} s after it was written"
        await pilot.pause(0.1)
        painted = _painted(app)
        assert "[smoke] failed: RuntimeError: asked to fail" in painted and "[smoke] busy from step 0" in painted
        # One word for the run's state, the one `aba status` uses.
        await wait_for(pilot, lambda: "failed" in str(title.render()))
        status = aba("status", run_id, "--json", timeout=60)
        assert '"state": "failed"' in status.stdout
