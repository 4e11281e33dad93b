"""A test-only stage for the supervisor: writes metrics fast, honours cancel, can resume from a checkpoint file.

Settings come from BUSY_* variables, or from `busy.json` in the run folder (per run, for tests that drive many
runs at once). Every start is appended to `<stage>/starts.txt` as "attempt pid", so tests can count workers."""

from __future__ import annotations

import json
import os
import signal
import time


def _settings(ctx) -> dict:
    path = ctx.run_dir / "busy.json"
    per_run = json.loads(path.read_text()) if path.exists() else {}
    return {
        "steps": int(per_run.get("steps", os.environ.get("BUSY_STEPS", "200"))),
        "delay": float(per_run.get("delay", os.environ.get("BUSY_DELAY", "0.01"))),
        "fail_at": per_run.get("fail_at", os.environ.get("BUSY_FAIL_AT")),
        "ignore_cancel": bool(per_run.get("ignore_cancel", False)),
    }


def run(ctx) -> None:
    opts = _settings(ctx)
    with open(ctx.folder / "starts.txt", "a", encoding="utf-8") as f:
        f.write(f"{getattr(ctx, 'attempt', 0)} {os.getpid()}\n")
    if opts["ignore_cancel"]:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    steps, delay = opts["steps"], opts["delay"]
    ckpt = ctx.folder / "checkpoint.json"
    start = json.loads(ckpt.read_text())["step"] if ckpt.exists() else 0
    ctx.log(f"busy from step {start}")
    for step in range(start, steps):
        if ctx.should_stop() and not opts["ignore_cancel"]:
            ckpt.write_text(json.dumps({"step": step}))
            ctx.log(f"checkpoint at step {step}")
            return
        ctx.metrics(step, {f"m{i}": float(step * i) for i in range(20)})
        ctx.progress(step + 1, steps)
        if opts["fail_at"] is not None and str(opts["fail_at"]) == str(step):
            raise RuntimeError("asked to fail")
        time.sleep(delay)
    ckpt.write_text(json.dumps({"step": steps}))
