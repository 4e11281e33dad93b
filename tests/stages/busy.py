"""A test-only stage for the supervisor: writes metrics fast, honours cancel, can resume from a checkpoint file."""

from __future__ import annotations

import json
import os
import time


def run(ctx) -> None:
    steps = int(os.environ.get("BUSY_STEPS", "200"))
    delay = float(os.environ.get("BUSY_DELAY", "0.01"))
    ckpt = ctx.folder / "checkpoint.json"
    start = json.loads(ckpt.read_text())["step"] if ckpt.exists() else 0
    ctx.log(f"busy from step {start}")
    for step in range(start, steps):
        if ctx.should_stop():
            ckpt.write_text(json.dumps({"step": step}))
            ctx.log(f"checkpoint at step {step}")
            return
        ctx.metrics(step, {f"m{i}": float(step * i) for i in range(20)})
        ctx.progress(step + 1, steps)
        if os.environ.get("BUSY_FAIL_AT") == str(step):
            raise RuntimeError("asked to fail")
        time.sleep(delay)
    ckpt.write_text(json.dumps({"step": steps}))
