"""`aba-tui [RUN_ID] [--runs-dir DIR] [--config CONFIG]`: open the control panel."""

from __future__ import annotations

import argparse
import sys

from engine.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aba-tui", description="Terminal control panel for the Entropy-Joy pipeline.")
    parser.add_argument("run_id", nargs="?", help="open this run (id or unique prefix); default: none, or --config")
    parser.add_argument("--runs-dir", help="where runs live (default: $ABA_RUNS_DIR or ./runs)")
    parser.add_argument("--config", help="config file that new runs start from (n on the pipeline screen)")
    args = parser.parse_args(argv)
    from app.app import make_app

    try:
        app = make_app(args.run_id, args.runs_dir, args.config)
    except UserError as err:
        print(f"aba-tui: {err}", file=sys.stderr)
        return 2
    app.run()
    return app.return_code or 0


if __name__ == "__main__":
    sys.exit(main())
