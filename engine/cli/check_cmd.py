"""`aba check RUN`: is the run database whole (SQLite's quick_check, or --full integrity_check); --repair copies
what can still be read into a new database beside it, keeps the original, and says what was lost."""

from __future__ import annotations

import argparse

from engine.runner import supervisor as sup
from engine.store.check import problems, repair
from engine.text import inert


def cmd_check(args: argparse.Namespace) -> int:
    root = sup.runs_dir(args.runs_dir)
    run_dirs = [sup.resolve_run(args.run_id, root)] if args.run_id or not args.all else sup.list_run_dirs(root)
    bad = 0
    for run_dir in run_dirs:
        found = problems(run_dir / "run.db", full=args.full)
        if not found:
            print(f"{run_dir.name}: ok")
            continue
        bad += 1
        print(f"{run_dir.name}: DAMAGED: {inert(found[0], oneline=True)}"
              + (f" (+{len(found) - 1} more)" if len(found) > 1 else ""))
        if args.repair:
            for line in repair(run_dir / "run.db").lines():
                print(inert(line, oneline=True))
        else:
            print(f"  `aba check --repair {run_dir.name}` copies what can be read into a new database")
    return 1 if bad else 0


def register(add) -> None:
    sp = add("check", cmd_check, "Check run databases for damage (SQLite quick_check); --repair recovers what can be "
                                 "read into run.recovered-TIME.db beside the original, which is kept. Exit 1 if damaged.")
    sp.add_argument("run_id", nargs="?", help="run id, unique prefix or path (default: the newest run)")
    sp.add_argument("--all", action="store_true", help="check every run in the runs folder")
    sp.add_argument("--full", action="store_true", help="the slower PRAGMA integrity_check (indexes against tables)")
    sp.add_argument("--repair", action="store_true", help="copy every readable row into a new database")
