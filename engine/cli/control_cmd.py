"""`aba` commands that start, follow and steer runs: run, demo, smoke, resume, start, skip, status, tail, cancel."""

from __future__ import annotations

import argparse
import sys
import json
from typing import Any

from engine import config as config_mod
from engine.cli.common import DEMO_CONFIG, open_run, when
from engine.cli.live_view import follow, tail
from engine.cli.output import print_table
from engine.runner import supervisor as sup
from engine.progress import eta_left, progress_cell
from engine.store import RunStore
from engine.text import inert


def cmd_run(args: argparse.Namespace) -> int:
    from engine.config.overrides import with_overrides

    sets = getattr(args, "set", None) or []
    cfg = with_overrides(args.config, sets) if sets else config_mod.load(args.config)
    if getattr(args, "use_standard", False):
        cfg.model.backend = "standard"
    stages = sup.parse_stages(args.stages) if args.stages else None
    run_dir = sup.create_run(args.config, sup.runs_dir(args.runs_dir), stages, cfg=cfg,
                             name=getattr(args, "name", None), data_from=getattr(args, "data_from", None))
    args.run_dir = run_dir
    print(f"run {run_dir.name}", flush=True)
    sup.launch(run_dir)
    if args.detach:
        print(f"detached; follow with `aba tail {run_dir.name}` or `aba-tui {run_dir.name}`", flush=True)
        return 0
    return follow(run_dir)


def cmd_demo(args: argparse.Namespace) -> int:
    args.config = str(DEMO_CONFIG)
    return cmd_run(args)


def cmd_smoke(args: argparse.Namespace) -> int:
    args.config = args.config or str(DEMO_CONFIG)
    args.stages = "smoke"
    rc = cmd_run(args)
    with RunStore(args.run_dir / "run.db") as store:
        report = store.results("smoke", "report").get("summary")
    if report:
        print(json.dumps(report, indent=2))
    return rc


def cmd_resume(args: argparse.Namespace) -> int:
    run_dir = sup.resolve_run(args.run_id, sup.runs_dir(args.runs_dir))
    sup.resume(run_dir, sup.parse_stages(args.stages) if args.stages else None)
    print(f"run {run_dir.name}", flush=True)
    return 0 if args.detach else follow(run_dir)


def cmd_start(args: argparse.Namespace) -> int:
    run_dir = sup.resolve_run(args.run_id, sup.runs_dir(args.runs_dir))
    (stage,) = sup.parse_stages([args.stage])
    sup.start_stage(run_dir, stage)
    print(f"run {run_dir.name}", flush=True)
    return 0 if args.detach else follow(run_dir, only=[stage])


def cmd_skip(args: argparse.Namespace) -> int:
    run_dir = sup.resolve_run(args.run_id, sup.runs_dir(args.runs_dir))
    (stage,) = sup.parse_stages([args.stage])
    sup.skip(run_dir, stage)
    print(f"{stage}: skipped")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    root = sup.runs_dir(args.runs_dir)
    if args.run_id is None:
        runs = sup.list_runs(root)
        if args.json:
            print(json.dumps([
                {"id": r.id, "name": r.name, "created": r.created, "state": r.state,
                 "stages": [_stage_json(s) for s in r.stages if s.selected]}
                for r in runs
            ], indent=2))
            return 0
        print_table(("run", "name", "created", "state", "stages"),
                    [(r.id, r.name, when(r.created), r.state, " ".join(f"{s.name}:{s.status}" for s in r.stages if s.selected))
                     for r in runs])
        return 0
    run_dir, store = open_run(args, readonly=True)
    with store:
        rows = sup.notice_crashes(store)
        events = store.events(kind="fallback")
        if args.json:
            out = {"id": run_dir.name, "state": sup.run_state(rows), "stages": [_stage_json(r) for r in rows],
                   "fallbacks": [{"stage": e.stage, "time": e.time, "message": e.message} for e in events]}
            print(json.dumps(out, indent=2))
            return 0
        table = []
        for r in rows:
            if not r.selected and r.status == "pending":
                continue
            eta = eta_left(store, r)
            table.append((r.name, r.status, r.attempts, r.pid or "", progress_cell(r.status, r.progress, r.progress_total, eta),
                          when(r.started), when(r.ended), r.reason or ""))
        print_table(("stage", "status", "attempts", "pid", "progress", "started", "ended", "reason"), table,
                    title=f"run {run_dir.name}")
        for e in events:
            print(f"fallback in {e.stage} at {when(e.time)}: {inert(e.message, oneline=True)}")
    return 0


def _stage_json(r) -> dict[str, Any]:
    return {"name": r.name, "status": r.status, "attempts": r.attempts, "pid": r.pid, "started": r.started,
            "ended": r.ended, "reason": r.reason}


def cmd_tail(args: argparse.Namespace) -> int:
    run_dir = sup.resolve_run(args.run_id, sup.runs_dir(args.runs_dir))
    return tail(run_dir, args.stage, args.follow)


def cmd_cancel(args: argparse.Namespace) -> int:
    run_dir = sup.resolve_run(args.run_id, sup.runs_dir(args.runs_dir))
    if args.grace is None:  # say how long the stop may take before waiting for it
        from engine.runner.grace import stop_grace

        with RunStore(run_dir / "run.db") as store:
            base = config_mod.load(run_dir / "config.toml").run.cancel_grace_s
            for row in store.stages():
                if row.status == "running" and (args.stage is None or row.name == args.stage):
                    print(stop_grace(store, row.name, base)[1], file=sys.stderr, flush=True)
    names = sup.cancel(run_dir, args.stage, grace_s=args.grace)
    if not names:
        print(f"run {run_dir.name}: nothing running or pending")
        return 0
    with RunStore(run_dir / "run.db") as store:
        for name in names:
            row = store.stage(name)
            print(f"{name}: {row.status}" + (f" ({inert(row.reason, oneline=True)})" if row.reason else ""))
    return 0


# -- data out --------------------------------------------------------------------------------


def register(add) -> None:
    sp = add("run", cmd_run, "Start a run from a config and follow it (first line: `run <RUN_ID>`).")
    sp.add_argument("config")
    sp.add_argument("--stages", help="comma-separated stages (default: the config's run.stages)")
    sp.add_argument("--detach", action="store_true", help="start and return; the run goes on in the background")
    sp.add_argument("--use-standard", action="store_true", help="force the HF transformers + PEFT backend")
    _run_options(sp)

    sp = add("demo", cmd_demo, "aba run data/configs/demo.toml: the tiny model, CPU, offline.")
    sp.add_argument("--stages")
    sp.add_argument("--detach", action="store_true")
    sp.add_argument("--use-standard", action="store_true")
    _run_options(sp)

    sp = add("smoke", cmd_smoke, "Step 0: 10 SFT + 10 GRPO steps; reports backend, peak VRAM, step times.")
    sp.add_argument("config", nargs="?", help="config (default: the demo config)")
    sp.add_argument("--use-standard", action="store_true", help="skip Unsloth, use HF transformers + PEFT")
    sp.add_argument("--detach", action="store_true")
    sp.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                    help="change one config key for this smoke run (repeatable), e.g. --set model.backend=unsloth")

    sp = add("status", cmd_status, "Stages of a run (or all runs, newest first).")
    sp.add_argument("run_id", nargs="?")
    sp.add_argument("--json", action="store_true")

    sp = add("tail", cmd_tail, "Print a run's log and follow it while it runs.")
    sp.add_argument("run_id", nargs="?")
    sp.add_argument("--stage")
    sp.add_argument("--no-follow", dest="follow", action="store_false")

    sp = add("cancel", cmd_cancel, "Ask running stages to stop (they save a checkpoint), kill after the grace period.")
    sp.add_argument("run_id", nargs="?")
    sp.add_argument("--stage")
    sp.add_argument("--grace", type=float, help="seconds before the hard kill (default: run.cancel_grace_s)")

    sp = add("resume", cmd_resume, "Rerun the stages that did not succeed, from their last checkpoint.")
    sp.add_argument("run_id", nargs="?")
    sp.add_argument("--stages")
    sp.add_argument("--detach", action="store_true")

    sp = add("start", cmd_start, "Run one stage of an existing run (again).")
    sp.add_argument("run_id")
    sp.add_argument("stage")
    sp.add_argument("--detach", action="store_true")

    sp = add("skip", cmd_skip, "Mark a stage of a run as skipped.")
    sp.add_argument("run_id")
    sp.add_argument("stage")


def _run_options(sp: argparse.ArgumentParser) -> None:
    """Generate once, train many: data from another run or a file, a name, keys changed from the config file."""
    sp.add_argument("--data-from", metavar="RUN_ID|PATH",
                    help="copy prompts, traces, judge scores and human edits from another run or a .jsonl/.csv file")
    sp.add_argument("--name", help="the run's name (default: run.name plus what differs from the config file)")
    sp.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                    help="change one config key for this run (repeatable), e.g. --set grpo.learning_rate=5e-5")
