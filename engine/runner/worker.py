"""One stage in one process: `python -m engine.runner.worker STAGE RUN_DIR`. Heartbeats, VRAM samples, a final status."""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from pathlib import Path

from engine import config as config_mod
from engine.context import StageCancelled, StageContext, StageFailed
from engine.errors import UserError
from engine.training.trackers import tracker_env
from engine.training.vram import VramSampler
from engine.runner.exits import WorkerExit
from engine.runner.procs import install_stop_handler
from engine.runner.threads import cap_threads
from engine.registry import stage_module
from engine.store import AttemptDecision, RunStore, StageStatus

HEARTBEAT_S = 2.0


def _monitor(ctx: StageContext, sampler: VramSampler, interval: float, done: threading.Event) -> None:
    """Heartbeat every 2 s (and pick up cancel requests); VRAM every `interval` seconds.

    Only `done` ends this loop: heartbeats, cancel pick-up and VRAM samples must outlive any one failure (a store
    busy for a moment, NVML going away, torch half-imported), so each is guarded and its first failure is logged once.
    """
    store: RunStore | None = None
    pid = os.getpid()
    next_beat = 0.0
    reported: set[str] = set()

    def report(what: str, err: Exception) -> None:
        key = f"{what}/{type(err).__name__}"
        if key in reported:
            return
        reported.add(key)
        message = f"monitor: {what} failed ({type(err).__name__}: {str(err)[:200]}); heartbeats go on"
        print(f"[{ctx.name}] warn: {message}", file=sys.stderr, flush=True)
        try:
            if store is not None:
                store.log(ctx.name, message, "warn")
        except Exception:  # noqa: S110 - the store itself is what failed; stderr has the line
            pass

    try:
        while not done.is_set():
            try:
                if store is None:
                    store = RunStore(ctx.store.path)  # its own connection: never waits on the stage's thread
                now = time.monotonic()
                if now >= next_beat:
                    if store.heartbeat(ctx.name, pid):
                        ctx.cancel_event.set()
                    next_beat = now + HEARTBEAT_S
            except Exception as err:
                report("heartbeat", err)
            try:
                values = sampler.sample()
                if values and store is not None:
                    store.add_metrics(ctx.name, ctx.step, values)
            except Exception as err:
                report("VRAM sample", err)
            done.wait(min(interval, HEARTBEAT_S))
    finally:
        if store is not None:
            store.close()


def run_stage(stage: str, run_dir: Path, attempt: int) -> int:
    """Run attempt `attempt` of a stage, which the driver started for this process (it alone counts attempts)."""
    store = RunStore(run_dir / "run.db")
    verdict = store.accept_attempt(stage, attempt, os.getpid())
    if verdict == AttemptDecision.GONE:
        # The driver that spawned us died before recording the attempt, or the attempt was ended meanwhile.
        print(f"[{stage}] attempt {attempt} is not this process's to run; exiting", flush=True)
        store.close()
        return WorkerExit.NOT_MINE
    print(f"[{stage}] attempt {attempt} started (pid {os.getpid()})", flush=True)
    if verdict == AttemptDecision.CANCEL:
        store.end_attempt(stage, attempt, StageStatus.CANCELLED, "cancelled before it started", WorkerExit.CANCELLED)
        store.close()
        return WorkerExit.CANCELLED
    try:
        cfg = config_mod.load(run_dir / "config.toml")
    except UserError as err:
        store.log(stage, str(err), "error")
        store.end_attempt(stage, attempt, StageStatus.FAILED, str(err), WorkerExit.FAILED)
        return WorkerExit.FAILED
    threads = cap_threads(cfg.run.torch_threads, cfg.train.num_processes)  # before the stage imports torch
    tracker_env(cfg, run_dir, stage)  # before the stage imports TRL, which imports trackio (it reads TRACKIO_DIR once)
    ctx = StageContext(name=stage, run_dir=run_dir, cfg=cfg, store=store, attempt=attempt)
    ctx.log(f"torch threads: {threads} (run.torch_threads = {cfg.run.torch_threads or 'auto'})")
    install_stop_handler(ctx.cancel_event.set)
    sampler = VramSampler(cfg.gpu.device_index)
    ctx.log(sampler.reason)
    done = threading.Event()
    monitor = threading.Thread(target=_monitor, args=(ctx, sampler, cfg.gpu.sample_interval_s, done), daemon=True)
    monitor.start()
    status, reason, code = StageStatus.SUCCEEDED, None, WorkerExit.OK
    try:
        stage_module(stage).run(ctx)
        if ctx.should_stop():
            status, reason, code = StageStatus.CANCELLED, "cancelled by the user; checkpoint saved", WorkerExit.CANCELLED
    except StageCancelled:
        status, reason, code = StageStatus.CANCELLED, "cancelled by the user; checkpoint saved", WorkerExit.CANCELLED
    except (StageFailed, UserError) as err:
        status, reason, code = StageStatus.FAILED, str(err), WorkerExit.FAILED
    except Exception as err:  # a bug in a stage: keep the traceback in the log, one line in the status
        tb = traceback.format_exc()
        print(tb, file=sys.stderr, flush=True)
        store.log(stage, tb, "error")
        status, reason, code = StageStatus.FAILED, f"{type(err).__name__}: {err}".splitlines()[0][:500], WorkerExit.FAILED
    finally:
        done.set()
        monitor.join(timeout=5)
    if status != StageStatus.SUCCEEDED:
        store.log(stage, f"{status}: {reason}", "error" if status == StageStatus.FAILED else "warn")
    if not store.end_attempt(stage, attempt, status, reason, code):
        print(f"[{stage}] attempt {attempt} had already been ended elsewhere; {status} not recorded", flush=True)
    store.close()
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 4 or argv[2] != "--attempt" or not argv[3].isdigit():
        print("usage: python -m engine.runner.worker STAGE RUN_DIR --attempt N  (the run's driver starts workers)",
              file=sys.stderr)
        return WorkerExit.USAGE
    return run_stage(argv[0], Path(argv[1]).resolve(), int(argv[3]))


if __name__ == "__main__":
    sys.exit(main())
