"""Runs: create, drive stages through detached workers, notice crashes, cancel and resume.

The driver (`python -m engine.runner.supervisor RUN_DIR`) is itself detached: it starts one worker per stage in
pipeline order and records what became of each. The CLI and the UI only start it and read the database.
"""

from __future__ import annotations

import errno
import os
import secrets
import sqlite3
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from engine import config as config_mod
from engine.config import STAGES, Config
from engine.errors import UserError
from engine.registry import loads_models
from engine.runner.grace import stop_grace
from engine.runner.liveness import STALE_HEARTBEAT_S, driver_alive, log_tail, notice_crashes, worker_alive  # noqa: F401
from engine.runner.exits import DriverExit, WorkerExit, driver_exit
from engine.runner.procs import (ask_to_stop, describe_exit, kill_tree, pid_alive, process_started,  # noqa: F401
                                 spawn_detached, spawn_worker, warm_zygote)
from engine.store import RunStore, StageRow, StageStatus, write_failure
from engine.store.check import damage
from engine.store.space import full_disk_failure, make_spare, spare_released
from engine.text import inert

ROOT = Path(__file__).resolve().parents[2]


def runs_dir(explicit: str | Path | None = None) -> Path:
    path = Path(explicit or os.environ.get("ABA_RUNS_DIR") or Path.cwd() / "runs")
    return path.expanduser().resolve()


def new_run_id() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


@dataclass(frozen=True)
class RunSummary:
    id: str
    path: Path
    name: str
    created: float
    state: str
    stages: list[StageRow]


def run_state(stages: list[StageRow]) -> str:
    chosen = [s for s in stages if s.selected]
    states = {s.status for s in chosen}
    for state in (StageStatus.RUNNING, StageStatus.CRASHED, StageStatus.FAILED, StageStatus.CANCELLED):
        if state in states:
            return state
    if chosen and states <= {StageStatus.SUCCEEDED, StageStatus.SKIPPED}:
        return StageStatus.SUCCEEDED
    return StageStatus.PENDING


def resolve_run(run_id: str | None, root: Path) -> Path:
    """A run folder from an id, a unique id prefix, a path, or (None) the newest run."""
    if run_id and Path(run_id, "run.db").exists():
        return Path(run_id).resolve()
    if not root.exists():
        raise UserError(f"{root}: no runs folder (start one with `aba run CONFIG`)")
    if run_id is None:
        runs = list_run_dirs(root)
        if not runs:
            raise UserError(f"{root}: no runs yet (start one with `aba run CONFIG` or `aba demo`)")
        return runs[0]
    exact = root / run_id
    if (exact / "run.db").exists():
        return exact
    matches = [p for p in list_run_dirs(root) if p.name.startswith(run_id)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UserError(f"run id {run_id!r} is ambiguous: {', '.join(p.name for p in matches[:5])}")
    raise UserError(f"no run {run_id!r} in {root}")


def list_run_dirs(root: Path) -> list[Path]:
    if not root.exists():
        return []
    return sorted((p for p in root.iterdir() if (p / "run.db").exists()), key=lambda p: p.name, reverse=True)


def list_runs(root: Path) -> list[RunSummary]:
    out = []
    for path in list_run_dirs(root):
        hurt = damage(path / "run.db")  # quick_check: a damaged run is listed as such, never left out
        if hurt:
            out.append(RunSummary(path.name, path, "", path.stat().st_mtime, f"DAMAGED ({hurt}; aba check --repair)", []))
            continue
        try:
            with RunStore(path / "run.db", readonly=True) as store:
                stages = notice_crashes(store)
                info = store.run_info()
        except (UserError, sqlite3.Error, OSError) as err:
            if isinstance(err, UserError) and "no run database" in str(err):
                continue  # being created right now
            out.append(RunSummary(path.name, path, "", 0.0, f"unreadable ({inert(str(err), oneline=True)})", []))
            continue
        out.append(RunSummary(path.name, path, info.get("name", ""), info.get("created", 0.0), run_state(stages), stages))
    return out


def create_run(cfg_path: str | Path, root: Path, stages: list[str] | None = None, cfg: Config | None = None, *,
               name: str | None = None, data_from: str | None = None) -> Path:
    """Validate the config, freeze it into a new run folder, and list the stages to run.

    `data_from` (or the config's `data.from_run`): a run id or a data file whose prompts, traces, judge scores and
    human edits are copied in, in one transaction, before any stage starts. The source is read and checked first:
    a bad one leaves no run folder behind. `name` defaults to what differs from the config file.
    """
    import shutil

    from engine.runner import datasource
    from engine.runner.inputs import check_inputs

    cfg = cfg or config_mod.load(cfg_path)
    chosen = parse_stages(stages) if stages else list(cfg.run.stages)
    if data_from:
        cfg.data.from_run = data_from  # the frozen config records where the data came from
    check_inputs(cfg, chosen)  # every file the stages will read, before anything is made (file:line: why)
    source = datasource.load_source(cfg.data.from_run, root, resolve_run) if cfg.data.from_run else None
    run_id = new_run_id()
    run_dir = root / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    try:
        config_mod.save(cfg, run_dir / "config.toml")
        with RunStore(run_dir / "run.db", create=True) as store:
            store.init_run(run_id, name or datasource.default_name(cfg, cfg_path, source), str(cfg_path), STAGES, chosen)
            if source is not None:
                datasource.attach(store, source, cfg.grpo.reward_weights)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return run_dir


def parse_stages(names: list[str] | str) -> list[str]:
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    for name in names:
        if name not in STAGES:
            import difflib

            close = difflib.get_close_matches(name, STAGES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (stages: {', '.join(STAGES)})"
            raise UserError(f"--stages: unknown stage {name!r}{hint}")
    return [s for s in STAGES if s in names]


def _python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def launch(run_dir: Path, only: list[str] | None = None) -> int:
    """Start the detached driver for a run (all selected stages, or `only` these); returns its pid."""
    args = [sys.executable, "-m", "engine.runner.supervisor", str(run_dir)] + (["--only", ",".join(only)] if only else [])

    def spawn() -> tuple[int, float | None]:
        proc = spawn_detached(args, run_dir / "driver.log", env=_python_env(), cwd=ROOT)
        return proc.pid, process_started(proc.pid)

    with RunStore(run_dir / "run.db") as store:
        pid = store.claim_driver(driver_alive, spawn)
        if pid is None:
            raise UserError(f"run {run_dir.name} is already being driven (pid {store.run_info()['driver_pid']})")
    return pid


def start(cfg_path: str | Path, root: Path, stages: list[str] | None = None, *, name: str | None = None,
          data_from: str | None = None) -> Path:
    run_dir = create_run(cfg_path, root, stages, name=name, data_from=data_from)
    launch(run_dir)
    return run_dir


refresh = notice_crashes  # the name callers used before "mark crashed when noticed" had its own


def drive(run_dir: Path, only: list[str] | None = None) -> int:
    """Run each selected, unfinished stage in pipeline order; stop at the first that does not succeed.

    What to do with a stage is decided when it is about to start, from the database as it is then (in the same
    write transaction that starts it), so a skip or cancel that lands while an earlier stage runs is honoured."""
    store = RunStore(run_dir / "run.db")
    me = os.getpid()
    if store.claim_driver(driver_alive, lambda: (me, process_started(me)), me=me) is None:
        print(f"run {run_dir.name} has another live driver; leaving it to that one", flush=True)
        store.close()
        return DriverExit.ANOTHER_DRIVER
    make_spare(run_dir)  # what a stage stopped by a full disk gives up to record why
    try:
        ahead = [row for row in store.stages() if (row.name in only if only is not None else row.selected)
                 and row.status in (StageStatus.PENDING, StageStatus.RUNNING)]
        if any(_forked(run_dir, row.name) for row in ahead):
            warm_zygote()  # the training libraries import in the fork server while the light stages run
        for row in store.stages():
            if only is not None and row.name not in only:
                continue
            if only is None and not row.selected:
                continue
            code = _drive_stage(store, run_dir, row.name)
            if code is not None:
                return code
        return DriverExit.OK
    finally:
        try:
            store.release_driver(me)
        except (sqlite3.Error, OSError) as err:
            if not full_disk_failure(err, run_dir):
                raise
            with spare_released(run_dir):
                store.release_driver(me)
        store.close()


def _forked(run_dir: Path, stage: str) -> bool:
    """The stage's worker is forked from the fork server (procs.spawn_worker): a stage that loads models, unless the
    run asks for Unsloth by name (it must be imported before transformers, which the server has imported)."""
    if not loads_models(stage):
        return False
    try:
        return config_mod.load(run_dir / "config.toml").model.backend != "unsloth"
    except Exception:  # noqa: BLE001 - the worker reports a bad config itself, in one line
        return False


def _drive_stage(store: RunStore, run_dir: Path, stage: str) -> int | None:
    """Start one stage and wait for it. None to go on with the next stage, else the driver's exit code."""
    log_path = run_dir / stage / "worker.log"
    procs = []

    def spawn(attempt: int) -> tuple[int, float | None]:
        proc = spawn_worker("engine.runner.worker", [stage, str(run_dir), "--attempt", str(attempt)], log_path,
                            env=_python_env(), cwd=ROOT, zygote=_forked(run_dir, stage))
        procs.append(proc)
        print(f"attempt {attempt} of {stage}: worker pid {proc.pid}", flush=True)
        return proc.pid, process_started(proc.pid)

    outcome = store.begin_attempt(stage, spawn)
    if outcome.attempt is None:  # not pending when its turn came: skipped, done, or cancelled meanwhile
        return driver_exit(outcome.status)
    n = outcome.attempt
    code = procs[0].wait()
    row = store.stage(stage)
    if row.status == StageStatus.RUNNING and row.attempts == n:
        if row.cancel_requested:
            _end(store, run_dir, stage, n, StageStatus.CANCELLED,
                 f"stopped on request before saving ({describe_exit(code)})", code)
        elif code == WorkerExit.DISK_FULL:  # the worker could not record it: the disk filled up
            _end(store, run_dir, stage, n, StageStatus.FAILED,
                 write_failure(OSError(errno.ENOSPC, "No space left on device"), run_dir / stage), code)
        else:
            _end(store, run_dir, stage, n, StageStatus.CRASHED,
                 f"{describe_exit(code)}; last output: {log_tail(log_path)}", code)
    status = next(a["status"] for a in store.attempts(stage) if a["n"] == n)
    return driver_exit(status)


def _end(store: RunStore, run_dir: Path, stage: str, n: int, status: str, reason: str, code: int) -> None:
    """end_attempt, on a full disk with the run folder's spare given up for it (and a one-line reason)."""
    try:
        store.end_attempt(stage, n, status, reason, code)
        return
    except (sqlite3.Error, OSError) as err:
        if not full_disk_failure(err, run_dir):
            raise
        status, reason = "failed", write_failure(err, run_dir / stage)
    with spare_released(run_dir):
        store.end_attempt(stage, n, status, reason, code)


def cancel(run_dir: Path, stage: str | None = None, grace_s: float | None = None, wait: bool = True) -> list[str]:
    """Ask running stages to stop at their next step (they save a checkpoint); kill after the grace period:
    `grace_s` when given, else run.cancel_grace_s stretched to 2 x the slowest recent step (runner.grace).

    Pending stages are cancelled at once. Signals go only to a running attempt's own process (pid + start time)."""
    with RunStore(run_dir / "run.db") as store:
        cfg = config_mod.load(run_dir / "config.toml")
        grace = cfg.run.cancel_grace_s if grace_s is None else grace_s
        rows = notice_crashes(store)
        targets = [r for r in rows if r.selected and r.status in (StageStatus.PENDING, StageStatus.RUNNING) and (stage is None or r.name == stage)]
        if stage is not None and not targets:
            raise UserError(f"stage {stage!r} of run {run_dir.name} is not running or pending")
        running = []
        for row in targets:
            now = store.request_cancel(row.name)  # the stage as it is now: a pending one may have started meanwhile
            if now is not None and now.status == StageStatus.RUNNING:
                running.append(now)
                ask_to_stop(now.pid, now.pid_started)
        if grace_s is None and running:  # the config's grace stretches to the measured step time
            stops = [stop_grace(store, r.name, grace) for r in running]
            for row, (_, line) in zip(running, stops):
                store.log(row.name, line, "warn")
            grace = max(g for g, _ in stops)
        if not wait:
            return [r.name for r in targets]
        deadline = time.monotonic() + grace
        while running and time.monotonic() < deadline:
            time.sleep(0.2)
            running = [r for r in running if _still_running(store, r)]
        for row in running:
            # Status first (guarded by the attempt), so the driver, seeing its child die, does not call it a crash.
            if store.end_attempt(row.name, row.attempts, StageStatus.CANCELLED, f"killed after the {grace:g} s grace period",
                                 event="kill") and kill_tree(row.pid, row.pid_started):
                gone_by = time.monotonic() + 5
                while worker_alive(row) and time.monotonic() < gone_by:
                    time.sleep(0.05)
        return [r.name for r in targets]


def _still_running(store: RunStore, row: StageRow) -> bool:
    now = store.stage(row.name)
    return now.status == StageStatus.RUNNING and now.attempts == row.attempts and worker_alive(now)


def _refuse_while_driven(store: RunStore, run_dir: Path) -> list[StageRow]:
    info = store.run_info()
    if driver_alive(info.get("driver_pid"), info.get("driver_started")):
        raise UserError(f"run {run_dir.name} is still being driven (pid {info['driver_pid']}); wait or cancel it first")
    rows = notice_crashes(store)
    if any(r.status == StageStatus.RUNNING for r in rows):
        raise UserError(f"run {run_dir.name} still has a running stage; cancel it first")
    return rows


def resume(run_dir: Path, stages: list[str] | None = None) -> int:
    """Rerun what did not succeed (from the stages' last checkpoints)."""
    with RunStore(run_dir / "run.db") as store:
        rows = _refuse_while_driven(store, run_dir)
        wanted = set(parse_stages(stages)) if stages else None
        todo = [r for r in rows if (r.selected if wanted is None else r.name in wanted) and r.status not in (StageStatus.SUCCEEDED, StageStatus.SKIPPED)]
        if wanted:
            store.select_stages(wanted)
        if not todo:
            raise UserError(f"run {run_dir.name}: nothing to resume, every selected stage succeeded")
        for row in todo:
            if not store.reset_stage(row.name):
                raise UserError(f"stage {row.name} of run {run_dir.name} started meanwhile; cancel it first")
    return launch(run_dir)


def start_stage(run_dir: Path, stage: str) -> int:
    """Run one stage of an existing run (again)."""
    with RunStore(run_dir / "run.db") as store:
        _refuse_while_driven(store, run_dir)
        if not store.reset_stage(stage):
            raise UserError(f"stage {stage} of run {run_dir.name} started meanwhile; cancel it first")
    return launch(run_dir, only=[stage])


def skip(run_dir: Path, stage: str) -> None:
    """Skip a stage that is not running; the driver honours it when the stage's turn comes."""
    with RunStore(run_dir / "run.db") as store:
        status = store.skip_stage(stage)
    if status == StageStatus.RUNNING:
        raise UserError(f"stage {stage} is running; cancel it first")
    if status == StageStatus.SUCCEEDED:
        raise UserError(f"stage {stage} already succeeded; there is nothing to skip")


def wait(run_dir: Path, poll_s: float = 0.5, timeout_s: float | None = None) -> list[StageRow]:
    """Block until no stage runs and the driver is gone."""
    start_t = time.monotonic()
    with RunStore(run_dir / "run.db") as store:
        while True:
            rows = notice_crashes(store)
            if not any(r.status == StageStatus.RUNNING for r in rows) and not run_driven(store):
                return rows
            if timeout_s is not None and time.monotonic() - start_t > timeout_s:
                return rows
            time.sleep(poll_s)


def run_driven(store: RunStore) -> bool:
    """Whether the run's driver still runs."""
    info = store.run_info()
    return driver_alive(info.get("driver_pid"), info.get("driver_started"))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m engine.runner.supervisor", description="Drive a run's stages.")
    parser.add_argument("run_dir")
    parser.add_argument("--only", help="comma-separated stages to run instead of the selected ones")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir).resolve()
    try:
        return drive(run_dir, args.only.split(",") if args.only else None)
    except (sqlite3.Error, OSError) as err:
        if not full_disk_failure(err, run_dir):
            raise
        try:
            print(f"driver stopped: {write_failure(err, run_dir)}", file=sys.stderr, flush=True)
        except OSError:
            pass
        return 1


if __name__ == "__main__":
    sys.exit(main())
