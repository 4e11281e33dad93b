"""`aba`: the headless command line. Same engine calls as the control panel; one module per group of commands."""

from __future__ import annotations

import argparse
import importlib
import sqlite3
import sys

from engine.errors import UserError
from engine.text import inert

# Each module has `register(add)`; a new group of commands is one module plus one line here.
COMMAND_MODULES = ("engine.cli.control_cmd", "engine.cli.data_cmd", "engine.cli.compare_cmd", "engine.cli.health_cmd",
                   "engine.cli.sweep_cmd", "engine.cli.chat_cmd", "engine.cli.check_cmd")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aba", description="Headless control of the Entropy-Joy fine-tuning pipeline.")
    p.add_argument("--runs-dir", help="where runs live (default: $ABA_RUNS_DIR or ./runs)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func, help_text: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.add_argument("--runs-dir", default=argparse.SUPPRESS, help="where runs live")
        sp.set_defaults(func=func)
        return sp

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(add)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _resume_queue(args)
    try:
        _refuse_damaged(args)
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"aba: {inert(err)}", file=sys.stderr)  # may quote a file's or a model's text
        return 2
    except BrokenPipeError:
        return 0
    except (sqlite3.Error, OSError) as err:  # a damaged database, a full or read-only disk: one line, no traceback
        print(f"aba: {inert(_environment_failure(args, err), oneline=True)}", file=sys.stderr)
        return 1


def _run_dir(args: argparse.Namespace):
    from engine.runner import supervisor as sup

    try:
        return sup.resolve_run(getattr(args, "run_id", None), sup.runs_dir(getattr(args, "runs_dir", None)))
    except UserError:
        return None


def _named_runs(args: argparse.Namespace) -> list[str | None]:
    """The runs a command reads: those named, or (None) the newest for one that defaults to it."""
    names = [getattr(args, k, None) for k in ("run_id", "run_a", "run_b")]
    names += list(getattr(args, "run_ids", None) or [])
    named: list[str | None] = [n for n in names if isinstance(n, str) and n]
    defaults = hasattr(args, "run_id") or hasattr(args, "run_ids")
    return named or ([None] if defaults and args.command != "status" else [])


def _refuse_damaged(args: argparse.Namespace) -> None:
    """A command on named runs reads their databases: a damaged one is named first (SQLite quick_check)."""
    if args.command == "check":
        return
    from engine.runner import supervisor as sup
    from engine.store.check import damage, describe_unreadable

    for name in _named_runs(args):
        try:
            run_dir = sup.resolve_run(name, sup.runs_dir(getattr(args, "runs_dir", None)))
        except UserError:
            continue  # the command itself says that the run is not there
        if damage(run_dir / "run.db"):
            raise UserError(describe_unreadable(run_dir, RuntimeError("damaged")))


def _environment_failure(args: argparse.Namespace, err: BaseException) -> str:
    from engine.store import disk_full, read_only, write_failure
    from engine.store.check import describe_unreadable

    run_dir = _run_dir(args) if getattr(args, "run_id", None) else None
    if disk_full(err) or read_only(err):
        return write_failure(err, getattr(err, "filename", None) or (run_dir / "run.db" if run_dir else "."))
    if run_dir is not None and isinstance(err, sqlite3.DatabaseError):
        return describe_unreadable(run_dir, err)
    return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"


def _resume_queue(args: argparse.Namespace) -> None:
    """Any `aba` command restarts the run queue's driver when queued work has none (a reboot, a killed driver)."""
    try:
        from engine.runner.supervisor import runs_dir
        from engine.sweep.queue import ensure_driver

        ensure_driver(runs_dir(getattr(args, "runs_dir", None)))
    except Exception as err:  # the command asked for still runs; the queue is only reported
        print(f"aba: could not resume the run queue: {inert(err, oneline=True)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
