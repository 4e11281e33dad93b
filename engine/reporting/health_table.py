"""The health of a run's training stages as `aba health`, the report and the panel show it: one row per rule."""

from __future__ import annotations

import math
from typing import Any

from engine.registry import stages_emitting
from engine.store import RunStore
from engine.training.health_rules import NO_DATA, RULES, Facts, replay



def _replayed(store: RunStore, stage: str, cfg: Any) -> list[dict[str, Any]]:
    """For a run written before the worker ran the rules: the same rules over its recorded metrics."""
    by_step: dict[int, dict[str, float | None]] = {}
    for row in store.metrics_since(0, stage=stage, limit=10**9):
        by_step.setdefault(row.step, {})[row.key] = row.value
    if not any("reward" in v for v in by_step.values()):
        return []
    facts = Facts(cfg.grpo.max_completion_length if stage == "grpo" else cfg.smoke.max_completion_length,
                  dict(cfg.grpo.reward_weights))
    monitor, _ = replay(sorted(by_step.items()), cfg.health, facts)
    return [dict(r, replayed=True) for r in monitor.snapshot()]


def health_rows(store: RunStore, cfg: Any = None) -> list[dict[str, Any]]:
    """Every rule of every stage that has health data: {stage, dimension, rule, state, first_step, value, detail, ...}.

    grpo-dims trains one LoRA per dimension, each watched by its own rules (stored as `<dimension>/<rule>`): its
    rows come once per dimension, labelled with it (`dimension`; None elsewhere)."""
    out = []
    known = {r.name for r in RULES}
    for stage in stages_emitting("health"):
        stored = store.results(stage, "health")
        if not stored and stage == "grpo" and cfg is not None:
            groups = {None: _replayed(store, stage, cfg)}
        elif stage == "judge":
            groups = {None: list(stored.values())}
        elif stored:
            by_prefix: dict[str | None, dict[str, dict]] = {}
            for key, row in stored.items():
                prefix, _, rule = key.rpartition("/")
                by_prefix.setdefault(prefix or None, {})[rule] = row
            groups = {}
            for prefix, rows in by_prefix.items():
                if prefix is None and not known & rows.keys():
                    groups[None] = list(rows.values())  # only the audit's judge_fooled
                    continue
                groups[prefix] = [rows.get(name) or _blank(name) for name in (r.name for r in RULES)]
                groups[prefix] += [v for k, v in rows.items() if k not in known]  # the audit's judge_fooled
        else:
            groups = {}
        for prefix, rows in groups.items():
            out += [dict(r, stage=stage, dimension=prefix) for r in rows]
    return out


def row_label(row: dict[str, Any]) -> str:
    """The stage a health row belongs to, with its dimension for grpo-dims: `grpo-dims entropy_reduction`."""
    return f"{row['stage']} {row['dimension']}" if row.get("dimension") else row["stage"]


def _blank(rule: str) -> dict[str, Any]:
    r = next(x for x in RULES if x.name == rule)
    return {"rule": rule, "title": r.title, "state": NO_DATA, "severity": r.severity, "value": None, "detail": "",
            "first_step": None, "last_step": None, "explain": r.explain, "remedy": r.remedy}


def reward_gain(rewards: list[float], n: int = 10, boot: int = 2000, seed: int = 0) -> dict[str, float] | None:
    """Mean reward of the last n steps minus the first n, with a 95% bootstrap interval (each end resampled apart)."""
    import numpy as np

    vals = np.asarray([r for r in rewards if r is not None and math.isfinite(r)], dtype=float)
    if len(vals) < 2 * n:
        return None
    first, last = vals[:n], vals[-n:]
    rng = np.random.default_rng(seed)
    diffs = rng.choice(last, (boot, n)).mean(axis=1) - rng.choice(first, (boot, n)).mean(axis=1)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"first": float(first.mean()), "last": float(last.mean()), "gain": float(last.mean() - first.mean()),
            "lo": float(lo), "hi": float(hi), "n": n}


def gain_line(g: dict[str, float]) -> str:
    return (f"mean reward of the first {g['n']} steps {g['first']:.3f}, last {g['n']} {g['last']:.3f}: "
            f"gain {g['gain']:+.3f} (95% bootstrap interval {g['lo']:+.3f} .. {g['hi']:+.3f})")


def health_section(store: RunStore, run_dir: Any) -> list[str]:
    """The report's health section: the reward gain, every rule that has data, and the judge audit."""
    from engine import config as config_mod

    try:
        cfg = config_mod.load(run_dir / "config.toml")
    except Exception:  # a report never fails over a config it cannot read
        cfg = None
    rows = health_rows(store, cfg)
    gains = {stage: g for stage in stages_emitting("reward_gain") for g in store.results(stage, "reward_gain").values()}
    audit = store.results("judge", "audit") or store.results("grpo", "audit")
    if not rows and not gains and not audit:
        return []
    out = ["", "## Health (the GRPO doctor)", ""]
    out += [f"- {stage}: {gain_line(g)}" for stage, g in gains.items()]
    if rows:
        out += ["", "| stage | rule | state | first step | value | detail |", "|---|---|---|---|---|---|"]
        for r in rows:
            value = "" if r["value"] is None else f"{r['value']:.4g}"
            first = "" if r["first_step"] is None else str(r["first_step"])
            detail = (r.get("detail") or "").replace("|", "/")
            out.append(f"| {row_label(r)} | {r['rule']} | {r['state']} | {first} | {value} | {detail} |")
        fired = [r for r in rows if r["first_step"] is not None]
        out += [""] + [f"- **{r['rule']}** ({row_label(r)}): {r['explain']} Try: {r['remedy']}" for r in fired]
    summary = audit.get("summary")
    if summary:
        f = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        out += ["", f"Judge audit ({summary['judge']}): degenerate completions above the real traces' median "
                    f"{f(summary['median_real'])}: {', '.join(summary['fooled_by']) or 'none'}; test-retest Krippendorff "
                    f"alpha {f(summary['retest_alpha'])}; both orders agree on {f(summary['position_consistent'])} of "
                    f"pairs, first position wins {f(summary['first_position_share'])}.", "",
                "| degenerate completion | mean reward | percentile of real traces |", "|---|---|---|"]
        for key, r in sorted(audit.items()):
            if key.startswith("degenerate/"):
                out.append(f"| {key.split('/', 1)[1]} | {f(r['reward'])} | {f(r['percentile'])} |")
    return out
