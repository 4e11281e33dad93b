"""`aba`: the headless command line. Same engine calls as the control panel; one module per group of commands."""

from __future__ import annotations

import argparse
import importlib
import sys

from engine.errors import UserError
from engine.text import inert

# Each module has `register(add)`; a new group of commands is one module plus one line here.
COMMAND_MODULES = ("engine.cli.control_cmd", "engine.cli.data_cmd", "engine.cli.compare_cmd", "engine.cli.health_cmd",
                   "engine.cli.sweep_cmd", "engine.cli.chat_cmd")


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
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"aba: {inert(err)}", file=sys.stderr)  # may quote a file's or a model's text
        return 2
    except BrokenPipeError:
        return 0


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
