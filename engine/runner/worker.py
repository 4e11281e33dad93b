"""One stage in one process: `python -m engine.runner.worker STAGE RUN_DIR`. Heartbeats, VRAM samples, a final status."""

from __future__ import annotations

import os
import sqlite3
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
from engine.store import AttemptDecision, RunStore, StageStatus, free_space, human_bytes, write_failure
from engine.store.space import full_disk_failure, space_needed_line, spare_released

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
        if stage in DISK_STAGES:
            warn_if_no_room(ctx)
        stage_module(stage).run(ctx)
        if ctx.should_stop():
            status, reason, code = StageStatus.CANCELLED, "cancelled by the user; checkpoint saved", WorkerExit.CANCELLED
    except StageCancelled:
        status, reason, code = StageStatus.CANCELLED, "cancelled by the user; checkpoint saved", WorkerExit.CANCELLED
    except (StageFailed, UserError) as err:
        status, reason, code = StageStatus.FAILED, str(err), WorkerExit.FAILED
    except Exception as err:
        if full_disk_failure(err, run_dir):  # the disk, not a bug: one line that names it, no traceback
            status, reason, code = StageStatus.FAILED, write_failure(err, run_dir / stage), WorkerExit.FAILED
        else:  # a bug in a stage: keep the traceback in the log, one line in the status
            tb = traceback.format_exc()
            _say(tb, sys.stderr)
            _quietly(lambda: store.log(stage, tb, "error"))
            status = StageStatus.FAILED
            reason, code = f"{type(err).__name__}: {err}".splitlines()[0][:500], WorkerExit.FAILED
    finally:
        done.set()
        monitor.join(timeout=5)
    code = _record_end(store, run_dir, stage, attempt, status, reason, code)
    store.close()
    return code


DISK_STAGES = ("sft", "grpo", "grpo_dims", "entangled", "export")


def warn_if_no_room(ctx: StageContext) -> None:
    """Before a stage that writes checkpoints or exports: warn when what it will write (known from the model's
    config) does not fit on the run's disk. An estimate never stops a stage."""
    try:
        from transformers import AutoConfig

        from engine.models.loading import base_path
        from engine.training.estimate import estimate_disk

        mcfg = AutoConfig.from_pretrained(base_path(ctx.cfg, ctx.run_dir))
        needed = estimate_disk(mcfg, lora_r=ctx.cfg.model.lora_r, target_modules=list(ctx.cfg.model.target_modules),
                               stage=ctx.name)
    except Exception as err:  # noqa: BLE001 - no estimate, no warning
        ctx.log(f"disk space check skipped: {type(err).__name__}: {str(err)[:200]}")
        return
    line = space_needed_line(ctx.run_dir, needed, f"{ctx.name} (checkpoints and outputs)")
    if line:
        ctx.event("warning", line, needed=needed)
    else:
        ctx.log(f"disk space: {ctx.name} writes up to about {human_bytes(needed)}; {human_bytes(free_space(ctx.run_dir))}"
                " free")


def _say(text: str, stream=None) -> None:
    """A line to the worker's log file, which a full disk may refuse."""
    try:
        print(text, file=stream or sys.stdout, flush=True)
    except OSError:
        pass


def _quietly(write) -> None:
    try:
        write()
    except (sqlite3.Error, OSError):
        pass


def _record_end(store: RunStore, run_dir: Path, stage: str, attempt: int, status: str, reason: str | None,
                code: int) -> int:
    """The attempt's final status, recorded even on a full disk (the run folder's spare is given up for it)."""
    try:
        if status != StageStatus.SUCCEEDED:
            store.log(stage, f"{status}: {reason}", "error" if status == StageStatus.FAILED else "warn")
        if not store.end_attempt(stage, attempt, status, reason, code):
            _say(f"[{stage}] attempt {attempt} had already been ended elsewhere; {status} not recorded")
        return code
    except (sqlite3.Error, OSError) as err:
        if not full_disk_failure(err, run_dir):
            raise
        if status != StageStatus.SUCCEEDED and "disk holding" not in (reason or ""):
            status, reason, code = StageStatus.FAILED, write_failure(err, run_dir / stage), WorkerExit.FAILED
    with spare_released(run_dir):
        try:
            store.end_attempt(stage, attempt, status, reason, code)
            if status != StageStatus.SUCCEEDED:
                _quietly(lambda: store.log(stage, f"{status}: {reason}", "error"))
            return code
        except (sqlite3.Error, OSError):
            pass
    _say(f"[{stage}] {reason} (not recorded: the disk is full)", sys.stderr)
    return WorkerExit.DISK_FULL


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 4 or argv[2] != "--attempt" or not argv[3].isdigit():
        print("usage: python -m engine.runner.worker STAGE RUN_DIR --attempt N  (the run's driver starts workers)",
              file=sys.stderr)
        return WorkerExit.USAGE
    stage, run_dir, attempt = argv[0], Path(argv[1]).resolve(), int(argv[3])
    try:
        return run_stage(stage, run_dir, attempt)
    except (sqlite3.Error, OSError) as err:  # before or after the stage ran: the disk filled up
        if not full_disk_failure(err, run_dir):
            raise
        with RunStore(run_dir / "run.db") as store:
            return _record_end(store, run_dir, stage, attempt, StageStatus.FAILED,
                               write_failure(err, run_dir / stage), WorkerExit.FAILED)


if __name__ == "__main__":
    sys.exit(main())
