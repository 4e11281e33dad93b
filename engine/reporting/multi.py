"""`aba report RUN_A RUN_B ...`: one Markdown report over several runs: what differs, what it did, overlaid curves."""

from __future__ import annotations

import time
from pathlib import Path

from engine.dims import DIMENSIONS, SHORT
from engine.reporting.compare import compare_runs, run_summary
from engine.reporting.markdown import _chart
from engine.store import RunStore


def _f(v, fmt: str = "{:.4f}") -> str:
    return "" if v is None else fmt.format(v)


def _cell(v) -> str:
    return str(v).replace("|", "/").replace("\n", " ")


def write_multi_report(run_dirs: list[Path], root: Path) -> Path:
    """reports/compare-<time>/report.md under the runs folder; every run is compared with the first."""
    from engine.config import load
    from engine.config.diff import differing_keys, flat, short_value

    out = root / "reports" / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    rows = [run_summary(d) for d in run_dirs]
    lines = [f"# {len(run_dirs)} runs compared", "", f"Report written {time.strftime('%Y-%m-%d %H:%M')}.", "",
             "## Runs", "", "| run | name | data | SFT loss | GRPO reward (last 10) | rating | checklist |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        rating = r["rating"]
        rt = f"{rating['rating']:.0f} [{rating['lo']:.0f}, {rating['hi']:.0f}]" if rating else ""
        ck = f"{r['checklist_passed']}/{r['checklist_total']}" if r["checklist_total"] else ""
        lines.append(f"| {r['id']} | {_cell(r['name'])} | {_cell(r['data'])} | {_f(r['sft_loss'])} | "
                     f"{_f(r['grpo_reward'])} | {rt} | {ck} |")
    flats = [flat(load(d / "config.toml")) for d in run_dirs]
    keys = differing_keys(flats)
    lines += ["", "## Config keys that differ", ""]
    if keys:
        lines += ["| key | " + " | ".join(r["id"] for r in rows) + " |", "|---" * (len(rows) + 1) + "|"]
        lines += [f"| {k} | " + " | ".join(_cell(short_value(f.get(k))) for f in flats) + " |" for k in keys]
    else:
        lines.append("None: the runs share one config.")
    lines += ["", "## GRPO reward components (mean of the last 10 steps)", "",
              "| run | " + " | ".join(SHORT[d] for d in DIMENSIONS) + " |", "|---" * (len(DIMENSIONS) + 1) + "|"]
    for r in rows:
        lines.append(f"| {r['id']} | " + " | ".join(_f(r["grpo_components"][d], "{:.3f}") for d in DIMENSIONS) + " |")
    for other in run_dirs[1:]:
        c = compare_runs(run_dirs[0], other, n_boot=500)
        lines += ["", f"## {other.name} minus {run_dirs[0].name}", "", "| dimension | delta | 95% interval |", "|---|---|---|"]
        for name, d in c["grpo_reward_deltas"].items():
            if d["delta"] is not None:
                lines.append(f"| {name} | {d['delta']:+.4f} | {d['lo']:+.4f} .. {d['hi']:+.4f} |")
        if c["tournament"]:
            lines += ["", "Final models head to head (heuristic judge, held-out prompts, both orders):", ""]
            for name, t in c["tournament"]["ratings"].items():
                lines.append(f"- {name}: {t['rating']:.0f} [{t['lo']:.0f}, {t['hi']:.0f}] ({t['wins']}-{t['losses']}-{t['ties']})")
    for stage, key in (("sft", "loss"), ("grpo", "reward")):
        series = []
        for d in run_dirs:
            with RunStore(d / "run.db", readonly=True) as s:
                series.append((d.name, *s.metric_series(stage, key)[1:]))
        name = f"{stage}_{key}.png"
        if _chart(out / name, f"{stage} {key}, overlaid", series):
            lines += ["", f"![{stage} {key}]({name})"]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
