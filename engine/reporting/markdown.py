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
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
