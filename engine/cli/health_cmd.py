"""`aba health RUN_ID` (the GRPO doctor's rules: state, first step fired, value) and `aba audit-judge RUN_ID`."""

from __future__ import annotations

import argparse
import json

from engine import config as config_mod
from engine.cli.common import console, open_run
from engine.reporting.health_table import health_rows, row_label

STYLE = {"ok": "green", "warn": "yellow", "alarm": "bold red", "no data": "dim"}


def _num(v) -> str:
    return "" if v is None else f"{v:.4g}"


def cmd_health(args: argparse.Namespace) -> int:
    run_dir, store = open_run(args)
    cfg = config_mod.load(run_dir / "config.toml")
    with store:
        rows = health_rows(store, cfg)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.table import Table
    from rich.text import Text

    if not rows:
        console().print(Text(f"run {run_dir.name}: no health data yet (the rules run in GRPO and the judge audit)"))
        return 0
    table = Table("stage", "rule", "state", "first step", "value", "detail", title=f"health of run {run_dir.name}")
    for r in rows:
        first = "" if r["first_step"] is None else str(r["first_step"])
        table.add_row(row_label(r), r["rule"], Text(r["state"], style=STYLE.get(r["state"], "")), first, _num(r["value"]),
                      Text(r["detail"] or ""))
    console().print(table)
    for r in rows:
        if r["state"] in ("warn", "alarm"):
            console().print(Text(f"{r['rule']} ({row_label(r)}): {r['explain']} Try: {r['remedy']}"))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from engine.evaluation.audit import run_audit
    from engine.context import StageContext

    run_dir, store = open_run(args)
    cfg = config_mod.load(run_dir / "config.toml")
    with store:
        result = run_audit(StageContext("judge", run_dir, cfg, store))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    from rich.table import Table
    from rich.text import Text

    s = result["summary"]
    table = Table("degenerate completion", "mean reward", "percentile of real traces", "above the real median",
                  title=f"judge audit: {s['judge']}, real median {_num(s['median_real'])} over {s['real_traces']} traces")
    for kind, r in result["degenerate"].items():
        table.add_row(kind, _num(r["reward"]), _num(r["percentile"]),
                      Text("ALARM" if r["above_median"] else "no", style="bold red" if r["above_median"] else "green"))
    console().print(table)
    p = result["position"]
    console().print(Text(f"test-retest: Krippendorff alpha {_num(s['retest_alpha'])} over {result['retest']['traces']} re-judged traces"))
    console().print(Text(f"position bias: {p['pairs']} pairs in both orders; verdicts survive the swap in "
                         f"{_num(p['consistent'])}; first position wins {_num(p['first_position_share'])} of decided verdicts"))
    return 0


def register(add) -> None:
    sp = add("health", cmd_health, "GRPO health rules of a run: state (ok/warn/alarm), first step fired, value.")
    sp.add_argument("run_id", nargs="?")
    sp.add_argument("--json", action="store_true")
    sp = add("audit-judge", cmd_audit, "Audit the run's judge: degenerate completions, test-retest, position bias.")
    sp.add_argument("run_id", nargs="?")
    sp.add_argument("--json", action="store_true")
