"""`aba report RUN`: runs/<id>/report/report.md with PNG charts, the battery, ratings and the checklist."""

from __future__ import annotations

import time
from pathlib import Path

from engine.dims import DIMENSIONS
from engine.registry import TRAINING_STAGES, stages_emitting
from engine.store import RunStore


def _chart(path: Path, title: str, series: list[tuple[str, list[int], list[float | None]]], ylabel: str = "") -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [(label, x, y) for label, x, y in series if x]
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(8, 4), dpi=110)
    for label, x, y in series:
        ax.plot(x, [float("nan") if v is None else v for v in y], label=label, linewidth=1.2)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write_report(run_dir: Path) -> Path:
    out = run_dir / "report"
    out.mkdir(exist_ok=True)
    lines = [f"# Run {run_dir.name}", "", f"Report written {time.strftime('%Y-%m-%d %H:%M')}.", ""]
    with RunStore(run_dir / "run.db") as store:
        info = store.run_info()
        lines += [f"Config: `{info.get('config_source')}` (frozen copy: `config.toml`)", "", "## Stages", "",
                  "| stage | status | attempts | reason |", "|---|---|---|---|"]
        for s in store.stages():
            if s.selected or s.attempts:
                lines.append(f"| {s.name} | {s.status} | {s.attempts} | {(s.reason or '').replace('|', '/')} |")
        fallbacks = store.events(kind="fallback")
        if fallbacks:
            lines += ["", "Fallbacks taken:", ""] + [f"- {e.stage}: {e.message}" for e in fallbacks]
        charts = []
        for stage in TRAINING_STAGES:
            _, x, y = store.metric_series(stage, "loss")
            if _chart(out / f"{stage}_loss.png", f"{stage} loss", [("loss", x, y)]):
                charts.append((f"{stage} loss", f"{stage}_loss.png"))
        series = [("reward (total)", *store.metric_series("grpo", "reward")[1:])]
        series += [(d, *store.metric_series("grpo", f"rewards/{d}/mean")[1:]) for d in DIMENSIONS]
        if _chart(out / "grpo_rewards.png", "GRPO reward and its nine components", series):
            charts.append(("GRPO reward and components", "grpo_rewards.png"))
        vram = []
        for stage in TRAINING_STAGES:
            _, x, y = store.metric_series(stage, "vram/used_mb")
            est = store.latest_metric(stage, "vram/estimate_mb")
            if x:
                vram.append((f"{stage} used MB", list(range(len(x))), y))
                if est:
                    vram.append((f"{stage} estimate MB", [0, len(x) - 1], [est, est]))
        if _chart(out / "vram.png", "VRAM used against the estimate (samples, 1 s apart)", vram, "MB"):
            charts.append(("VRAM against the estimate", "vram.png"))
        lines += ["", "## Charts", ""] + [f"![{t}]({f})" for t, f in charts] if charts else ["", "(no training metrics yet)"]
        estimates = {k: v for stage in stages_emitting("vram") for k, v in store.results(stage, "vram").items()}
        if estimates:
            lines += ["", "| stage | VRAM estimate GB | measured peak GB | median step s |", "|---|---|---|---|"]
            for stage, r in estimates.items():
                f = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
                lines.append(f"| {stage} | {f(r.get('estimate_gb'))} | {f(r.get('measured_peak_gb'))} | {f(r.get('median_step_s'))} |")
        from engine.reporting.health_table import health_section

        lines += health_section(store, run_dir)
        battery = store.results("eval", "battery")
        if battery:
            models = sorted({r["model"] for r in battery.values()})
            tests = list(dict.fromkeys(r["test"] for r in battery.values()))
            lines += ["", "## Battery", "", "| test | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
            for t in tests:
                cells = [("pass" if battery[f"{m}/{t}"]["passed"] else "FAIL") if f"{m}/{t}" in battery else "" for m in models]
                lines.append(f"| {t} | " + " | ".join(cells) + " |")
        ratings = store.results("eval", "ratings")
        if ratings:
            lines += ["", "## Tournament ratings (Bradley-Terry, Elo scale, bootstrap 95%)", "",
                      "| model | rating | 95% interval | W-L-T |", "|---|---|---|---|"]
            for m, r in sorted(ratings.items(), key=lambda kv: -kv[1]["rating"]):
                lines.append(f"| {m} | {r['rating']:.0f} | {r['lo']:.0f} .. {r['hi']:.0f} | {r['wins']}-{r['losses']}-{r['ties']} |")
        checklist = store.results("eval", "checklist")
        if checklist:
            lines += ["", "## Success checklist", ""]
            lines += [f"- [{'x' if r['passed'] else ' '}] {item}: {r['detail']}" for item, r in checklist.items()]
        gguf = store.artifacts("export", "gguf")
        if gguf:
            lines += ["", "## Export", ""] + [f"- `{a['path']}`" for a in gguf]
        cells = store.results("commitment", "cell")
        if cells:
            lines += ["", "## Commitment sweep", "", "| lambda | layers | consistency | perplexity | distinct-2 | repetition |",
                      "|---|---|---|---|---|---|"]
            for c in cells.values():
                lines.append(f"| {c['lambda']:g} | {c['layers']} | {c['consistency']:.3f} | {c['perplexity']:.2f} | "
                             f"{c['distinct2']:.3f} | {c['repetition']:.3f} |")
        lines += exchanges_section(store)
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _cell(text: str | None, n: int = 160) -> str:
    one = " ".join((text or "").split())
    return (one[:n] + "…" if len(one) > n else one).replace("|", "/")


def exchanges_section(store: RunStore, limit: int = 100) -> list[str]:
    """The playground's kept exchanges (issue 21): each question, every model's answer, its weighted total."""
    rows = store.exchanges(limit=limit)
    if not rows:
        return []
    lines = ["", "## Playground exchanges", "",
             f"The newest {len(rows)} answers kept from `aba chat` and the Playground screen (weighted total by the "
             "run's judge; * marks the higher of the turn).", "",
             "| turn | model | settings | weighted | tokens | tok/s | prompt | answer |", "|---|---|---|---|---|---|---|---|"]
    best: dict[int, float] = {}
    for r in rows:
        if r["weighted"] is not None:
            best[r["turn"]] = max(best.get(r["turn"], r["weighted"]), r["weighted"])
    for r in rows:
        s = r["settings"] or {}
        how = ("greedy" if not s.get("temperature") else f"T={s['temperature']:g}") + (" think" if s.get("thinking") else "")
        w = "judge failed" if r["weighted"] is None else f"{r['weighted']:.3f}" + (
            " *" if best.get(r["turn"]) == r["weighted"] and sum(x["turn"] == r["turn"] for x in rows) > 1 else "")
        rate = "" if r["tokens_per_s"] is None else f"{r['tokens_per_s']:.1f}"
        mark = f" [{r['promoted']}]" if r["promoted"] else ""
        lines.append(f"| {r['turn']} | {r['model']} | {how} | {w} | {r['new_tokens'] or 0} | {rate} | "
                     f"{_cell(r['prompt'], 80)}{mark} | {_cell(r['answer'])} |")
    return lines
