"""`aba` commands that read a run's data: metrics, traces, config, judge agreement, export-data, report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from engine.cli.output import print_table
from engine import config as config_mod
from engine.cli.common import DEMO_CONFIG, console, open_run
from engine.evaluation.agreement import judge_agreement
from engine.reporting.exports import export_scores_csv, export_training_jsonl


def cmd_metrics(args: argparse.Namespace) -> int:
    run_dir, store = open_run(args)
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
        console().print(table)
    return 0


def cmd_traces(args: argparse.Namespace) -> int:
    run_dir, store = open_run(args)
    with store:
        rows = store.traces()
        if args.json:
            keep = ("id", "prompt_id", "category", "tier", "idx", "backend", "model", "offline", "judged", "judge_failed",
                    "judge_rescaled", "reviewed", "weighted", "judge", "human", "effective", "turns", "reasoning", "answer")
            print(json.dumps([{k: r[k] for k in keep} for r in rows], indent=1))
            return 0
        from engine.dims import DIMENSIONS, SHORT

        print_table(("id", "category", "tier", "score", *[SHORT[d] for d in DIMENSIONS], "rev", "fail"),
                    [(r["id"], r["category"] or "", r["tier"] or "", _num(r["weighted"]),
                      *[_num((r["effective"] or {}).get(d)) for d in DIMENSIONS], "y" if r["reviewed"] else "",
                      "y" if r["judge_failed"] else "") for r in rows], title=f"run {run_dir.name}")
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


def cmd_agreement(args) -> int:
    ids = args.run_ids or [None]
    if len(ids) > 1:  # several runs (e.g. ones sharing lineage): pooled, each trace once
        from engine.evaluation.agreement import pooled_judge_agreement
        from engine.runner import supervisor as sup
        from engine.store import RunStore

        root = sup.runs_dir(args.runs_dir)
        stores = [RunStore(sup.resolve_run(i, root) / "run.db", readonly=True) for i in ids]
        try:
            rows = pooled_judge_agreement(stores)
        finally:
            for s in stores:
                s.close()
    else:
        args.run_id = ids[0]
        _, store = open_run(args)
        with store:
            rows = judge_agreement(store)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.table import Table

    fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    table = Table("dimension", "n", "MAE", "Spearman", "Kendall tau", "Krippendorff alpha", title="judge vs human")
    for dim, r in rows.items():
        table.add_row(dim, str(r["n"]), fmt(r["mae"]), fmt(r["spearman"]), fmt(r["kendall_tau"]), fmt(r["alpha"]))
    console().print(table)
    return 0


def cmd_export_data(args) -> int:
    run_dir, store = open_run(args)
    out = Path(args.out or run_dir / "export")
    out.mkdir(parents=True, exist_ok=True)
    with store:
        n = export_training_jsonl(store, out / "train.jsonl", None if args.tier == "all" else args.tier, args.min_score)
        m = export_scores_csv(store, out / "scores.csv")
    print(f"{out / 'train.jsonl'}: {n} conversations\n{out / 'scores.csv'}: {m} traces")
    return 0


def cmd_report(args) -> int:
    ids = args.run_ids or [None]
    if len(ids) > 1:  # several runs: one comparison report
        from engine.reporting.multi import write_multi_report
        from engine.runner import supervisor as sup

        root = sup.runs_dir(args.runs_dir)
        print(write_multi_report([sup.resolve_run(i, root) for i in ids], root))
        return 0
    from engine.reporting.markdown import write_report

    args.run_id = ids[0]
    run_dir, store = open_run(args)
    store.close()
    print(write_report(run_dir))
    return 0


def register(add) -> None:
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
    sp = add("report", cmd_report, "Write runs/<id>/report/report.md with charts, battery, ratings and checklist; "
             "with several runs, one report comparing them.")
    sp.add_argument("run_ids", nargs="*", metavar="RUN_ID")
    sp = add("judge-agreement", cmd_agreement, "Judge vs human per dimension: n, MAE, Spearman, Kendall tau, Krippendorff alpha; "
             "several runs (sharing lineage) are pooled, each trace once.")
    sp.add_argument("run_ids", nargs="*", metavar="RUN_ID")
    sp.add_argument("--json", action="store_true")
    sp = add("export-data", cmd_export_data, "Write train.jsonl (TRL conversational format) and scores.csv.")
    sp.add_argument("run_id", nargs="?")
    sp.add_argument("--out", help="folder (default: runs/<id>/export)")
    sp.add_argument("--tier", default="chosen", choices=["chosen", "adequate", "rejected", "all"])
    sp.add_argument("--min-score", type=float, help="only traces whose effective weighted score is at least this")
