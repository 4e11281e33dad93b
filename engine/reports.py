"""Read-only reports over a run's data: judge-vs-human agreement, training-data export. CLI commands live here too."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from engine.dims import DIMENSIONS
from engine.store import RunStore
from engine.traindata import assistant_content


def _ranks(xs: list[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1  # ties share the mean rank
        i = j + 1
    return ranks


def _pearson(a: list[float], b: list[float]) -> float | None:
    n = len(a)
    if n < 2:
        return None
    ma, mb = sum(a) / n, sum(b) / n
    va = sum((x - ma) ** 2 for x in a)
    vb = sum((y - mb) ** 2 for y in b)
    if va == 0 or vb == 0:
        return None
    return sum((x - ma) * (y - mb) for x, y in zip(a, b)) / math.sqrt(va * vb)


def spearman(a: list[float], b: list[float]) -> float | None:
    return _pearson(_ranks(a), _ranks(b))


def kendall_tau_b(a: list[float], b: list[float]) -> float | None:
    n = len(a)
    if n < 2:
        return None
    conc = disc = ties_a = ties_b = 0
    for i in range(n):
        for j in range(i + 1, n):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                conc += 1
            else:
                disc += 1
    denom = math.sqrt((conc + disc + ties_a) * (conc + disc + ties_b))
    return None if denom == 0 else (conc - disc) / denom


def judge_agreement(store: RunStore) -> dict[str, dict[str, Any]]:
    """Per dimension, over traces a human re-scored: n, mean absolute error, Spearman and Kendall tau-b."""
    out = {}
    for dim, pairs in store.judge_human_pairs().items():
        judge = [p[0] for p in pairs]
        human = [p[1] for p in pairs]
        out[dim] = {
            "n": len(pairs),
            "mae": sum(abs(j - h) for j, h in pairs) / len(pairs) if pairs else None,
            "spearman": spearman(judge, human),
            "kendall_tau": kendall_tau_b(judge, human),
        }
    return out


def export_training_jsonl(store: RunStore, path: Path, tier: str | None = "chosen", min_score: float | None = None) -> int:
    """Traces as TRL conversational rows: {"messages": [...turns, assistant with <think>]} plus their scores."""
    where, args = "WHERE t.judge_failed = 0", []
    if tier:
        where, args = where + " AND t.tier = ?", [tier]
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for t in store.traces(where, args):
            if min_score is not None and (t["weighted"] is None or t["weighted"] < min_score):
                continue
            messages = t["turns"] + [{"role": "assistant", "content": assistant_content(t["reasoning"], t["answer"])}]
            fh.write(json.dumps({"messages": messages, "tier": t["tier"], "category": t["category"],
                                 "scores": t["effective"], "weighted": t["weighted"]}, ensure_ascii=False) + "\n")
            n += 1
    return n


def export_scores_csv(store: RunStore, path: Path) -> int:
    rows = store.traces()
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "category", "tier", "weighted", "reviewed", "judge_failed", "rescaled",
                    *[f"judge_{d}" for d in DIMENSIONS], *[f"human_{d}" for d in DIMENSIONS]])
        for t in rows:
            judge = t["judge"] or {}
            w.writerow([t["id"], t["category"], t["tier"], t["weighted"], int(t["reviewed"]), int(t["judge_failed"]),
                        int(t["judge_rescaled"]), *[judge.get(d) for d in DIMENSIONS], *[t["human"].get(d) for d in DIMENSIONS]])
    return len(rows)


# -- CLI ---------------------------------------------------------------------------------------


def _cmd_agreement(args) -> int:
    from engine.cli import _console, _open

    _, store = _open(args)
    with store:
        rows = judge_agreement(store)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.table import Table

    fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    table = Table("dimension", "n", "MAE", "Spearman", "Kendall tau", title="judge vs human")
    for dim, r in rows.items():
        table.add_row(dim, str(r["n"]), fmt(r["mae"]), fmt(r["spearman"]), fmt(r["kendall_tau"]))
    _console().print(table)
    return 0


def _cmd_export_data(args) -> int:
    from engine.cli import _open

    run_dir, store = _open(args)
    out = Path(args.out or run_dir / "export")
    out.mkdir(parents=True, exist_ok=True)
    with store:
        n = export_training_jsonl(store, out / "train.jsonl", None if args.tier == "all" else args.tier, args.min_score)
        m = export_scores_csv(store, out / "scores.csv")
    print(f"{out / 'train.jsonl'}: {n} conversations\n{out / 'scores.csv'}: {m} traces")
    return 0


def _cmd_report(args) -> int:
    from engine.cli import _open
    from engine.report import write_report

    run_dir, store = _open(args)
    store.close()
    print(write_report(run_dir))
    return 0


def _register(add) -> None:
    sp = add("report", _cmd_report, "Write runs/<id>/report/report.md with charts, battery, ratings and checklist.")
    sp.add_argument("run_id", nargs="?")
    sp = add("judge-agreement", _cmd_agreement, "Judge vs human per dimension: n, MAE, Spearman, Kendall tau.")
    sp.add_argument("run_id", nargs="?")
    sp.add_argument("--json", action="store_true")
    sp = add("export-data", _cmd_export_data, "Write train.jsonl (TRL conversational format) and scores.csv.")
    sp.add_argument("run_id", nargs="?")
    sp.add_argument("--out", help="folder (default: runs/<id>/export)")
    sp.add_argument("--tier", default="chosen", choices=["chosen", "adequate", "rejected", "all"])
    sp.add_argument("--min-score", type=float, help="only traces whose effective weighted score is at least this")


COMMANDS: list = [_register]
