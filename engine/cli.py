"""`aba`: the headless command line. Same engine calls as the control panel."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from engine import config as config_mod
from engine import supervisor as sup
from engine.errors import UserError
from engine.store import FINAL, RunStore

ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = ROOT / "data" / "configs" / "demo.toml"


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else ""


def _open(args: argparse.Namespace) -> tuple[Path, RunStore]:
    run_dir = sup.resolve_run(getattr(args, "run_id", None), sup.runs_dir(args.runs_dir))
    return run_dir, RunStore(run_dir / "run.db")


# -- run, demo, smoke, resume ----------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    if getattr(args, "use_standard", False):
        cfg.model.backend = "standard"
    stages = sup.parse_stages(args.stages) if args.stages else None
    run_dir = sup.create_run(args.config, sup.runs_dir(args.runs_dir), stages, cfg=cfg)
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


def follow(run_dir: Path, only: list[str] | None = None) -> int:
    """Show progress until the run stops. Ctrl-C cancels politely. Exit 0 when every asked stage succeeded."""
    store = RunStore(run_dir / "run.db")
    wanted = only or [r.name for r in store.stages() if r.selected]
    try:
        if sys.stdout.isatty():
            _follow_rich(run_dir, store, wanted)
        else:
            _follow_plain(run_dir, store, wanted)
    except KeyboardInterrupt:
        print("\ncancelling: the stage saves a checkpoint and stops (resume with `aba resume`)...", file=sys.stderr)
        sup.cancel(run_dir)
    rows = {r.name: r for r in sup.refresh(store)}
    store.close()
    bad = [rows[n] for n in wanted if rows[n].status != "succeeded"]
    for r in bad:
        print(f"{r.name}: {r.status}" + (f": {r.reason}" if r.reason else ""), file=sys.stderr)
    return 0 if not bad else 1


def _running(store: RunStore) -> bool:
    rows = sup.refresh(store)
    return any(r.status == "running" for r in rows) or sup.pid_alive(store.run_info().get("driver_pid"))


def _follow_plain(run_dir: Path, store: RunStore, wanted: list[str]) -> None:
    last_log = 0
    seen: dict[str, str] = {}
    while True:
        alive = _running(store)
        for row in store.stages():
            if row.name in wanted and seen.get(row.name) != row.status:
                seen[row.name] = row.status
                extra = f" ({row.reason})" if row.reason and row.status in FINAL else ""
                print(f"stage {row.name}: {row.status}{extra}", flush=True)
        for log in store.logs_since(last_log):
            last_log = log.id
            print(f"  [{log.stage}] {log.message.splitlines()[0] if log.message else ''}", flush=True)
        if not alive:
            return
        time.sleep(0.5)


def _follow_rich(run_dir: Path, store: RunStore, wanted: list[str]) -> None:
    from rich.live import Live
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.fields[stage]:<11}"),
        TextColumn("{task.fields[status]:<10}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}", markup=False),
    )
    tasks = {
        name: progress.add_task("", total=None, stage=name, status="pending", start=False) for name in wanted
    }
    last_log = 0
    messages: dict[str, str] = {}
    with Live(progress, refresh_per_second=4, transient=False):
        while True:
            alive = _running(store)
            for log in store.logs_since(last_log):
                last_log = log.id
                messages[log.stage] = (log.message.splitlines() or [""])[0][:80]
            for row in store.stages():
                if row.name not in tasks:
                    continue
                task = tasks[row.name]
                if row.status != "pending" and not progress.tasks[task].started:
                    progress.start_task(task)
                total = row.progress_total or None
                done = row.progress or 0
                if row.status == "succeeded" and total:
                    done = total
                desc = row.progress_label or messages.get(row.name, "")
                if row.status in FINAL and row.reason:
                    desc = row.reason
                progress.update(task, total=total, completed=done, status=row.status, description=desc[:100])
                if row.status in FINAL:
                    progress.stop_task(task)
            if not alive:
                return
            time.sleep(0.25)


# -- status, tail, cancel --------------------------------------------------------------------


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
        from rich.table import Table

        table = Table("run", "name", "created", "state", "stages")
        for r in runs:
            stages = " ".join(f"{s.name}:{s.status}" for s in r.stages if s.selected)
            table.add_row(r.id, r.name, _when(r.created), r.state, stages)
        _console().print(table)
        return 0
    run_dir, store = _open(args)
    with store:
        rows = sup.refresh(store)
        events = store.events(kind="fallback")
        if args.json:
            out = {"id": run_dir.name, "state": sup.run_state(rows), "stages": [_stage_json(r) for r in rows],
                   "fallbacks": [{"stage": e.stage, "time": e.time, "message": e.message} for e in events]}
            print(json.dumps(out, indent=2))
            return 0
        from rich.table import Table

        table = Table("stage", "status", "attempts", "pid", "started", "ended", "reason", title=f"run {run_dir.name}")
        for r in rows:
            if not r.selected and r.status == "pending":
                continue
            table.add_row(r.name, r.status, str(r.attempts), str(r.pid or ""), _when(r.started), _when(r.ended), r.reason or "")
        _console().print(table)
        for e in events:
            _console().print(f"fallback in {e.stage} at {_when(e.time)}: {e.message}", markup=False)
    return 0


def _stage_json(r) -> dict[str, Any]:
    return {"name": r.name, "status": r.status, "attempts": r.attempts, "pid": r.pid, "started": r.started,
            "ended": r.ended, "reason": r.reason}


def cmd_tail(args: argparse.Namespace) -> int:
    run_dir, store = _open(args)
    last = 0
    with store:
        while True:
            for log in store.logs_since(last, stage=args.stage):
                last = log.id
                print(f"{_when(log.time)} [{log.stage}] {log.level}: {log.message}", flush=True)
            if not args.follow or not _running(store):
                return 0
            time.sleep(0.5)


def cmd_cancel(args: argparse.Namespace) -> int:
    run_dir = sup.resolve_run(args.run_id, sup.runs_dir(args.runs_dir))
    names = sup.cancel(run_dir, args.stage, grace_s=args.grace)
    if not names:
        print(f"run {run_dir.name}: nothing running or pending")
        return 0
    with RunStore(run_dir / "run.db") as store:
        for name in names:
            row = store.stage(name)
            print(f"{name}: {row.status}" + (f" ({row.reason})" if row.reason else ""))
    return 0


# -- data out --------------------------------------------------------------------------------


def cmd_metrics(args: argparse.Namespace) -> int:
    run_dir, store = _open(args)
    with store:
        rows = store.metrics_since(0, stage=args.stage, limit=10_000_000)
        if args.key:
            rows = [r for r in rows if r.key in args.key]
        if args.json:
            print(json.dumps([{"step": r.step, "key": r.key, "value": r.value, "time": r.time} for r in rows]))
            return 0
        from rich.table import Table

        summary: dict[str, list] = {}
        for r in rows:
            summary.setdefault(r.key, []).append(r)
        table = Table("key", "n", "first", "last", "min", "max", title=f"{run_dir.name} / {args.stage}")
        for key, items in sorted(summary.items()):
            vals = [i.value for i in items if i.value is not None]
            fmt = lambda v: "" if v is None else f"{v:.4g}"  # noqa: E731
            table.add_row(key, str(len(items)), fmt(items[0].value), fmt(items[-1].value),
                          fmt(min(vals) if vals else None), fmt(max(vals) if vals else None))
        _console().print(table)
    return 0


def cmd_traces(args: argparse.Namespace) -> int:
    run_dir, store = _open(args)
    with store:
        rows = store.traces()
        if args.json:
            keep = ("id", "prompt_id", "category", "tier", "idx", "backend", "model", "offline", "judged", "judge_failed",
                    "judge_rescaled", "reviewed", "weighted", "judge", "human", "effective", "turns", "reasoning", "answer")
            print(json.dumps([{k: r[k] for k in keep} for r in rows], indent=1))
            return 0
        from rich.table import Table

        from engine.dims import DIMENSIONS, SHORT

        table = Table("id", "category", "tier", "score", *[SHORT[d] for d in DIMENSIONS], "rev", "fail")
        for r in rows:
            eff = r["effective"] or {}
            table.add_row(str(r["id"]), r["category"] or "", r["tier"] or "", _num(r["weighted"]),
                          *[_num(eff.get(d)) for d in DIMENSIONS], "y" if r["reviewed"] else "", "y" if r["judge_failed"] else "")
        _console().print(table)
    return 0


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}"


def cmd_config(args: argparse.Namespace) -> int:
    if args.keys:
        for key, default, help_text in config_mod.describe():
            print(f"{key} = {default}\n    {help_text}")
        return 0
    cfg = config_mod.load(args.config)
    print(f"{args.config}: ok ({cfg.model.base}, backend {cfg.model.backend}, stages {', '.join(cfg.run.stages)})")
    return 0


# -- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aba", description="Headless control of the Entropy-Joy fine-tuning pipeline.")
    p.add_argument("--runs-dir", help="where runs live (default: $ABA_RUNS_DIR or ./runs)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func, help_text: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.add_argument("--runs-dir", default=argparse.SUPPRESS, help="where runs live")
        sp.set_defaults(func=func)
        return sp

    sp = add("run", cmd_run, "Start a run from a config and follow it (first line: `run <RUN_ID>`).")
    sp.add_argument("config")
    sp.add_argument("--stages", help="comma-separated stages (default: the config's run.stages)")
    sp.add_argument("--detach", action="store_true", help="start and return; the run goes on in the background")
    sp.add_argument("--use-standard", action="store_true", help="force the HF transformers + PEFT backend")

    sp = add("demo", cmd_demo, "aba run data/configs/demo.toml: the tiny model, CPU, offline.")
    sp.add_argument("--stages")
    sp.add_argument("--detach", action="store_true")
    sp.add_argument("--use-standard", action="store_true")

    sp = add("smoke", cmd_smoke, "Step 0: 10 SFT + 10 GRPO steps; reports backend, peak VRAM, step times.")
    sp.add_argument("config", nargs="?", help="config (default: the demo config)")
    sp.add_argument("--use-standard", action="store_true", help="skip Unsloth, use HF transformers + PEFT")
    sp.add_argument("--detach", action="store_true")

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

    sp = add("metrics", cmd_metrics, "Metrics of a stage: rows {step, key, value, time} with --json.")
    sp.add_argument("run_id", nargs="?")
    sp.add_argument("--stage", required=True)
    sp.add_argument("--key", action="append", help="only this key (repeatable)")
    sp.add_argument("--json", action="store_true")

    sp = add("traces", cmd_traces, "Traces with tier, category, judge scores, human edits and effective scores.")
    sp.add_argument("run_id", nargs="?")
    sp.add_argument("--json", action="store_true")

    sp = add("config", cmd_config, "Check a config file, or list every key with its default and help.")
    sp.add_argument("config", nargs="?", default=str(DEMO_CONFIG))
    sp.add_argument("--keys", action="store_true", help="list every key with its default and help")

    for extra in _extra_commands():
        extra(add)
    return p


def _extra_commands():
    """Commands that live beside the stages they report on."""
    from engine import reports

    return reports.COMMANDS


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"aba: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
