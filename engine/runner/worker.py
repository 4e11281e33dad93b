"""One stage in one process: `python -m engine.runner.worker STAGE RUN_DIR`. Heartbeats, VRAM samples, a final status."""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from pathlib import Path

from engine import config as config_mod
from engine.runner.context import StageCancelled, StageContext, StageFailed
from engine.errors import UserError
from engine.training.vram import VramSampler
from engine.runner.procs import install_stop_handler
from engine.runner.threads import cap_threads
from engine.stages.registry import stage_module
from engine.store import RunStore

HEARTBEAT_S = 2.0
EXIT_OK, EXIT_FAILED, EXIT_CANCELLED = 0, 1, 3


def _monitor(ctx: StageContext, sampler: VramSampler, interval: float, done: threading.Event) -> None:
    """Heartbeat every 2 s (and pick up cancel requests); VRAM every `interval` seconds."""
    store = RunStore(ctx.store.path)  # its own connection: never waits on the stage's thread
    pid = os.getpid()
    next_beat = 0.0
    try:
        while not done.is_set():
            now = time.monotonic()
            if now >= next_beat:
                if store.heartbeat(ctx.name, pid):
                    ctx.cancel_event.set()
                next_beat = now + HEARTBEAT_S
            values = sampler.sample()
            if values:
                store.add_metrics(ctx.name, ctx.step, values)
            done.wait(min(interval, HEARTBEAT_S))
    finally:
        store.close()


def run_stage(stage: str, run_dir: Path) -> int:
    store = RunStore(run_dir / "run.db")
    row = store.stage(stage)
    if row.status != "running" or row.pid != os.getpid():
        store.start_attempt(stage, os.getpid())
    try:
        cfg = config_mod.load(run_dir / "config.toml")
    except UserError as err:
        store.log(stage, str(err), "error")
        store.finish_stage(stage, "failed", str(err))
        return EXIT_FAILED
    threads = cap_threads(cfg.run.torch_threads, cfg.train.num_processes)  # before the stage imports torch
    ctx = StageContext(name=stage, run_dir=run_dir, cfg=cfg, store=store)
    ctx.log(f"torch threads: {threads} (run.torch_threads = {cfg.run.torch_threads or 'auto'})")
    install_stop_handler(ctx.cancel_event.set)
    sampler = VramSampler(cfg.gpu.device_index)
    ctx.log(sampler.reason)
    done = threading.Event()
    monitor = threading.Thread(target=_monitor, args=(ctx, sampler, cfg.gpu.sample_interval_s, done), daemon=True)
    monitor.start()
    status, reason, code = "succeeded", None, EXIT_OK
    try:
        stage_module(stage).run(ctx)
        if ctx.should_stop():
            status, reason, code = "cancelled", "cancelled by the user; checkpoint saved", EXIT_CANCELLED
    except StageCancelled:
        status, reason, code = "cancelled", "cancelled by the user; checkpoint saved", EXIT_CANCELLED
    except (StageFailed, UserError) as err:
        status, reason, code = "failed", str(err), EXIT_FAILED
    except Exception as err:  # a bug in a stage: keep the traceback in the log, one line in the status
        tb = traceback.format_exc()
        print(tb, file=sys.stderr, flush=True)
        store.log(stage, tb, "error")
        status, reason, code = "failed", f"{type(err).__name__}: {err}".splitlines()[0][:500], EXIT_FAILED
    finally:
        done.set()
        monitor.join(timeout=5)
    if status != "succeeded":
        store.log(stage, f"{status}: {reason}", "error" if status == "failed" else "warn")
    store.finish_stage(stage, status, reason, code)
    store.close()
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m engine.runner.worker STAGE RUN_DIR", file=sys.stderr)
        return 2
    return run_stage(argv[0], Path(argv[1]).resolve())


if __name__ == "__main__":
    sys.exit(main())
