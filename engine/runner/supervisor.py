"""Runs: create, drive stages through detached workers, notice crashes, cancel and resume.

The driver (`python -m engine.runner.supervisor RUN_DIR`) is itself detached: it starts one worker per stage in
pipeline order and records what became of each. The CLI and the UI only start it and read the database.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from engine import config as config_mod
from engine.config import STAGES, Config
from engine.errors import UserError
from engine.runner.grace import stop_grace
from engine.runner.procs import ask_to_stop, describe_exit, kill_tree, pid_alive, spawn_detached
from engine.store import FINAL, RunStore, StageRow

STALE_HEARTBEAT_S = 30.0
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
    for state in ("running", "crashed", "failed", "cancelled"):
        if state in states:
            return state
    if chosen and states <= {"succeeded", "skipped"}:
        return "succeeded"
    return "pending"


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
        try:
            with RunStore(path / "run.db") as store:
                stages = refresh(store)
                info = store.run_info()
        except UserError:
            continue
        out.append(RunSummary(path.name, path, info.get("name", ""), info.get("created", 0.0), run_state(stages), stages))
    return out


def create_run(cfg_path: str | Path, root: Path, stages: list[str] | None = None, cfg: Config | None = None) -> Path:
    """Validate the config, freeze it into a new run folder, and list the stages to run."""
    cfg = cfg or config_mod.load(cfg_path)
    chosen = parse_stages(stages) if stages else list(cfg.run.stages)
    run_id = new_run_id()
    run_dir = root / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    config_mod.save(cfg, run_dir / "config.toml")
    with RunStore(run_dir / "run.db", create=True) as store:
        store.init_run(run_id, cfg.run.name, str(cfg_path), STAGES, chosen)
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
    with RunStore(run_dir / "run.db") as store:
        info = store.run_info()
        if pid_alive(info.get("driver_pid")):
            raise UserError(f"run {run_dir.name} is already being driven (pid {info['driver_pid']})")
        args = [sys.executable, "-m", "engine.runner.supervisor", str(run_dir)] + (["--only", ",".join(only)] if only else [])
        proc = spawn_detached(args, run_dir / "driver.log", env=_python_env(), cwd=ROOT)
        store.set_driver_pid(proc.pid)
    return proc.pid


def start(cfg_path: str | Path, root: Path, stages: list[str] | None = None) -> Path:
    run_dir = create_run(cfg_path, root, stages)
    launch(run_dir)
    return run_dir


def refresh(store: RunStore) -> list[StageRow]:
    """Mark stages whose worker is gone without a final status as crashed; return the stages."""
    stages = store.stages()
    changed = False
    for row in stages:
        if row.status != "running":
            continue
        if pid_alive(row.pid):
            continue
        # The driver records the exit code itself; arriving here means no one could.
        tail = " | ".join(r.message.splitlines()[0] for r in store.last_logs(row.name, 3) if r.message)
        tail = tail or _log_tail(store.path.parent / row.name / "worker.log", 3)
        reason = f"worker (pid {row.pid}) is gone without a final status; last log: {tail or '(none)'}"
        changed |= store.finish_stage(row.name, "crashed", reason, None, only_if_running=True)
    return store.stages() if changed else stages


def _log_tail(path: Path, n: int = 5) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    lines = [ln.strip() for ln in lines if ln.strip()]
    return " | ".join(lines[-n:])[-600:]


def drive(run_dir: Path, only: list[str] | None = None) -> int:
    """Run each selected, unfinished stage in pipeline order; stop at the first that does not succeed."""
    store = RunStore(run_dir / "run.db")
    store.set_driver_pid(os.getpid())
    try:
        for row in store.stages():
            if only is not None and row.name not in only:
                continue
            if only is None and (not row.selected or row.status in ("succeeded", "skipped")):
                continue
            if store.cancel_requested(row.name):
                store.finish_stage(row.name, "cancelled", "cancelled before it started")
                return 3
            log_path = run_dir / row.name / "worker.log"
            proc = spawn_detached(
                [sys.executable, "-m", "engine.runner.worker", row.name, str(run_dir)], log_path, env=_python_env(), cwd=ROOT
            )
            store.start_attempt(row.name, proc.pid)
            code = proc.wait()
            if store.cancel_requested(row.name) and store.finish_stage(
                row.name, "cancelled", f"stopped on request before saving ({describe_exit(code)})", code, only_if_running=True
            ):
                return 3
            if store.finish_stage(
                row.name, "crashed", f"{describe_exit(code)}; last output: {_log_tail(log_path)}", code, only_if_running=True
            ):
                return 1
            if store.stage(row.name).status != "succeeded":
                return 1
        return 0
    finally:
        store.set_driver_pid(None)
        store.close()


def cancel(run_dir: Path, stage: str | None = None, grace_s: float | None = None, wait: bool = True) -> list[str]:
    """Ask running stages to stop at their next step (they save a checkpoint); kill after the grace period:
    `grace_s` when given, else run.cancel_grace_s stretched to 2 x the slowest recent step (runner.grace)."""
    with RunStore(run_dir / "run.db") as store:
        cfg = config_mod.load(run_dir / "config.toml")
        grace = cfg.run.cancel_grace_s if grace_s is None else grace_s
        rows = refresh(store)
        targets = [r for r in rows if r.selected and r.status not in FINAL and (stage is None or r.name == stage)]
        if stage is not None and not targets:
            raise UserError(f"stage {stage!r} of run {run_dir.name} is not running or pending")
        for row in targets:
            store.request_cancel(row.name)
            if row.status == "running" and row.pid:
                ask_to_stop(row.pid)
        running = [r for r in targets if r.status == "running"]
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
            running = [r for r in running if store.stage(r.name).status == "running" and pid_alive(r.pid)]
        for row in running:
            # Status first, so the driver, seeing its child die, does not call it a crash.
            store.finish_stage(row.name, "cancelled", f"killed after the {grace:g} s grace period", only_if_running=True)
            kill_tree(row.pid)
            gone_by = time.monotonic() + 5
            while pid_alive(row.pid) and time.monotonic() < gone_by:
                time.sleep(0.05)
        for row in targets:
            if row.status == "pending":
                store.finish_stage(row.name, "cancelled", "cancelled before it started")
        return [r.name for r in targets]


def resume(run_dir: Path, stages: list[str] | None = None) -> int:
    """Rerun what did not succeed (from the stages' last checkpoints)."""
    with RunStore(run_dir / "run.db") as store:
        rows = refresh(store)
        if any(r.status == "running" for r in rows):
            raise UserError(f"run {run_dir.name} still has a running stage; cancel it first")
        wanted = set(parse_stages(stages)) if stages else None
        todo = [r for r in rows if (r.selected if wanted is None else r.name in wanted) and r.status not in ("succeeded", "skipped")]
        if wanted:
            store.select_stages(wanted)
        if not todo:
            raise UserError(f"run {run_dir.name}: nothing to resume, every selected stage succeeded")
        for row in todo:
            store.reset_stage(row.name)
    return launch(run_dir)


def start_stage(run_dir: Path, stage: str) -> int:
    """Run one stage of an existing run (again)."""
    with RunStore(run_dir / "run.db") as store:
        if any(r.status == "running" for r in refresh(store)):
            raise UserError(f"run {run_dir.name} has a running stage; wait or cancel it")
        store.reset_stage(stage)
    return launch(run_dir, only=[stage])


def skip(run_dir: Path, stage: str) -> None:
    with RunStore(run_dir / "run.db") as store:
        row = store.stage(stage)
        if row.status == "running":
            raise UserError(f"stage {stage} is running; cancel it first")
        store.skip_stage(stage)


def wait(run_dir: Path, poll_s: float = 0.5, timeout_s: float | None = None) -> list[StageRow]:
    """Block until no stage runs and the driver is gone."""
    start_t = time.monotonic()
    with RunStore(run_dir / "run.db") as store:
        while True:
            rows = refresh(store)
            if not any(r.status == "running" for r in rows) and not pid_alive(store.run_info().get("driver_pid")):
                return rows
            if timeout_s is not None and time.monotonic() - start_t > timeout_s:
                return rows
            time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m engine.runner.supervisor", description="Drive a run's stages.")
    parser.add_argument("run_dir")
    parser.add_argument("--only", help="comma-separated stages to run instead of the selected ones")
    args = parser.parse_args(argv)
    return drive(Path(args.run_dir).resolve(), args.only.split(",") if args.only else None)


if __name__ == "__main__":
    sys.exit(main())
