"""`aba runs` and `aba compare`: every run in one table, and what differs between two runs and what it did."""

from __future__ import annotations

import argparse
import json

from engine.cli.common import console
from engine.dims import DIMENSIONS, SHORT
from engine.progress import duration
from engine.runner import supervisor as sup
from engine.text import cut_middle, inert

STATUS_MARK = {"succeeded": "✓", "failed": "✗", "crashed": "✗", "running": "▶", "pending": "·", "cancelled": "⊘",
               "skipped": "-"}


def _f(v, fmt: str = "{:.4f}") -> str:
    return "" if v is None else fmt.format(v)


def _wide():
    """A console as wide as the table needs when the output goes to a file or a pipe (rich would fold at 80)."""
    c = console()
    if not c.is_terminal:
        c.width = 240
    return c


def cmd_runs(args: argparse.Namespace) -> int:
    from engine.reporting.compare import summary_or_damage

    root = sup.runs_dir(args.runs_dir)
    rows = [r for r in map(summary_or_damage, sup.list_run_dirs(root)) if r is not None]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.table import Table
    from rich.text import Text

    c = _wide()
    if not c.is_terminal:  # piped: whole values in one line per run, as before
        table = Table("run", "name", "data", "stages", "time", "SFT loss", "reward", *[SHORT[d] for d in DIMENSIONS],
                      "rating", "check", title=f"runs in {root}")
        for r in rows:
            rating = r["rating"]
            table.add_row(
                r["id"], Text(r["name"]), Text(r["data"]), " ".join(f"{k}:{v}" for k, v in r["stages"].items()),
                duration(r["duration_s"]), _f(r["sft_loss"]), _f(r["grpo_reward"]),
                *[_f(r["grpo_components"][d], "{:.2f}") for d in DIMENSIONS],
                f"{rating['rating']:.0f} [{rating['lo']:.0f},{rating['hi']:.0f}]" if rating else "",
                f"{r['checklist_passed']}/{r['checklist_total']}" if r["checklist_total"] else "",
            )
        c.print(table)
        return 0
    # On a terminal: every metric column whole and on screen; the run id, name and data source are cut in the
    # middle to what is left, the stages wrap (one mark per stage: ✓ succeeded, ✗ failed, ▶ running, · pending).
    metrics = ["time", "SFT loss", "reward", *[SHORT[d] for d in DIMENSIONS], "rating", "check"]
    table = Table(box=None, padding=(0, 1), pad_edge=False, collapse_padding=True, header_style="bold underline",
                  title=f"runs in {root}")  # one space between columns: each costs its width + 1
    cells = []
    for r in rows:
        rating = r["rating"]
        cells.append([duration(r["duration_s"]), _f(r["sft_loss"], "{:.3f}"), _f(r["grpo_reward"], "{:.3f}"),
                      *[_f(r["grpo_components"][d], "{:.2f}") for d in DIMENSIONS],
                      f"{rating['rating']:.0f} [{rating['lo']:.0f},{rating['hi']:.0f}]" if rating else "",
                      f"{r['checklist_passed']}/{r['checklist_total']}" if r["checklist_total"] else ""])
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(metrics)]
    left = max(c.width - sum(w + 1 for w in widths) - 4, 36)  # what the id, name, data and stages share
    id_w = min(max((len(r["id"]) for r in rows), default=3), max(left * 2 // 5, 12))
    name_w = min(max((len(r["name"]) for r in rows), default=4), max(left // 4, 6))
    rest = max(left - id_w - name_w - 2, 10)
    table.add_column("run", no_wrap=True, width=id_w)
    table.add_column("name", no_wrap=True, width=name_w)
    for h, w in zip(metrics, widths):
        table.add_column(h, no_wrap=True, justify="right", min_width=w)
    table.add_column("stages · data", overflow="fold", width=rest)
    for r, row in zip(rows, cells):
        stages = " ".join(f"{k}{STATUS_MARK.get(v, '?')}" for k, v in r["stages"].items())
        data = f"  data: {r['data']}" if r["data"] else ""
        table.add_row(cut_middle(r["id"], id_w), Text(cut_middle(inert(r["name"], oneline=True), name_w),
                                                      style="bold red" if r.get("damaged") else ""), *row,
                      Text(stages + inert(data, oneline=True)))
    c.print(table)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from engine.config.diff import short_value
    from engine.reporting.compare import compare_runs

    root = sup.runs_dir(args.runs_dir)
    a, b = sup.resolve_run(args.run_a, root), sup.resolve_run(args.run_b, root)
    out = compare_runs(a, b)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    from rich.table import Table
    from rich.text import Text

    c = _wide()
    c.print(f"A = {a.name} ({out['a']['name']})   B = {b.name} ({out['b']['name']})", markup=False)
    diff = Table("config key", "A", "B", title="config: only the keys that differ")
    for d in out["config_diff"]:
        diff.add_row(d["key"], Text(short_value(d["a"])), Text(short_value(d["b"])))
    c.print(diff if out["config_diff"] else "config: identical")
    deltas = Table("GRPO (last 10 steps)", "A", "B", "B - A", "95% interval", title="reward and its nine components")
    for name, d in out["grpo_reward_deltas"].items():
        deltas.add_row(name, _f(d["a"]), _f(d["b"]), _f(d["delta"], "{:+.4f}"),
                       "" if d["lo"] is None else f"{d['lo']:+.4f} .. {d['hi']:+.4f}")
    c.print(deltas)
    ho = out["heldout_deltas"]
    if ho:
        t = Table("dimension", "n", "B - A", "95% interval",
                  title=f"held-out scores, paired by prompt ({ho['models'][0]} of A vs {ho['models'][1]} of B)")
        for dim, d in ho["dims"].items():
            t.add_row(dim, str(d["n"]), _f(d["delta"], "{:+.3f}"), "" if d["lo"] is None else f"{d['lo']:+.3f} .. {d['hi']:+.3f}")
        c.print(t)
    if out["tournament"]:
        t = Table("model", "rating", "95% interval", "W-L-T",
                  title=f"final models head to head ({out['tournament']['prompts']} held-out prompts, heuristic judge)")
        for name, r in out["tournament"]["ratings"].items():
            t.add_row(Text(name), f"{r['rating']:.0f}", f"{r['lo']:.0f} .. {r['hi']:.0f}", f"{r['wins']}-{r['losses']}-{r['ties']}")
        c.print(t)
    else:
        c.print("tournament: needs the eval stage in both runs")
    return 0


def register(add) -> None:
    sp = add("runs", cmd_runs, "Every run: name, data source, stages, duration, final SFT loss, GRPO reward and its "
             "components, rating, checklist.")
    sp.add_argument("--json", action="store_true")
    sp = add("compare", cmd_compare, "Two runs: the config keys that differ, reward deltas with bootstrap intervals, "
             "and their final models head to head.")
    sp.add_argument("run_a")
    sp.add_argument("run_b")
    sp.add_argument("--json", action="store_true")
