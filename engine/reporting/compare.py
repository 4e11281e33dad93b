"""Run summaries and comparisons (config diff, reward deltas, final-model tournament) for the CLI and the panel."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from engine.dims import DIMENSIONS
from engine.evaluation.tournament import ChecklistItem
from engine.store import RunStore
from engine.store.check import damage

# Metric keys that measure the machine (its clock, its memory), not the run's numbers: two identical runs differ
# only in these. Matched by name, or by their last part (`<dim>/step_time_s`, `judge/wall_s`).
WALL_CLOCK_KEYS = frozenset({"llm/latency_s", "step_time", "step_time_s", "tokens_per_s", "train_runtime",
                             "wall_s", "step_share"})
MEASURED_PREFIXES = ("vram/",)  # device memory as sampled; vram/estimate_mb is computed, so it stays compared
LAST_STEPS = 10  # a run's final GRPO reward: the mean of its last 10 logged steps
FINAL_MODELS = ("grpo", "sft", "base")  # a run's final model: the furthest stage of the pipeline it evaluated


def is_wall_clock(key: str) -> bool:
    """Timing and measured-memory keys, prefixed ones too (grpo-dims writes `<dim>/step_time_s`)."""
    if key.endswith("vram/estimate_mb"):
        return False
    return key in WALL_CLOCK_KEYS or key.rsplit("/", 1)[-1] in WALL_CLOCK_KEYS or key.startswith(MEASURED_PREFIXES)


def _last(values: list[float | None], n: int = LAST_STEPS) -> list[float]:
    return [v for v in values if v is not None][-n:]


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def data_source(lineage: dict[str, Any] | None, traces: int) -> str:
    if lineage:
        return f"run {lineage['source_id']}" if lineage.get("kind") == "run" else f"file {lineage.get('source_name')}"
    return "generated" if traces else "none"


def summary_or_damage(run_dir: Path) -> dict[str, Any] | None:
    """run_summary, or the damaged row when the database cannot be read; None for a run being created."""
    import sqlite3

    from engine.errors import UserError

    try:
        return run_summary(run_dir)
    except (UserError, sqlite3.Error, OSError) as err:
        if not (run_dir / "run.db").exists():
            return None
        return damaged_summary(run_dir, f"UNREADABLE: {(str(err).splitlines() or [''])[0]}")


def damaged_summary(run_dir: Path, why: str) -> dict[str, Any]:
    """The runs table's row for a run whose database cannot be read: its id and why, every figure empty."""
    return {"id": run_dir.name, "name": why, "created": None, "data": "", "lineage": [], "traces": 0, "stages": {},
            "duration_s": None, "sft_loss": None, "grpo_reward": None, "grpo_steps_averaged": 0,
            "grpo_components": dict.fromkeys(DIMENSIONS), "rating": None, "checklist_passed": None,
            "checklist_total": None, "damaged": why}


def run_summary(run_dir: Path) -> dict[str, Any]:
    """One row of the runs table: name, data source, stages, duration, final SFT loss, final GRPO reward and its
    nine components, the final model's tournament rating with its interval, the checklist passed out of 5."""
    hurt = damage(run_dir / "run.db")
    if hurt:  # listed, marked, never left out nor read further
        return damaged_summary(run_dir, f"DAMAGED: {hurt} (aba check --repair {run_dir.name})")
    with RunStore(run_dir / "run.db", readonly=True) as store:
        info = store.run_info()
        stages = store.stages()
        lineage = store.lineage()
        traces = store.trace_count()
        sft_loss = _last(store.metric_series("sft", "loss")[2], 1)
        reward = _last(store.metric_series("grpo", "reward")[2])
        dims = {d: _mean(_last(store.metric_series("grpo", f"rewards/{d}/mean")[2])) for d in DIMENSIONS}
        ratings = store.results("eval", "ratings")
        checklist = store.results("eval", "checklist")
    started = [s.started for s in stages if s.started]
    ended = [s.ended or time.time() for s in stages if s.started]
    final = next((m for m in FINAL_MODELS if m in ratings), None)
    rating = ratings.get(final) if final else None
    return {
        "id": run_dir.name, "name": info.get("name", ""), "created": info.get("created"),
        "data": data_source(lineage, traces), "lineage": lineage, "traces": traces,
        "stages": {s.name: s.status for s in stages if s.selected},
        "duration_s": (max(ended) - min(started)) if started else None,
        "sft_loss": sft_loss[0] if sft_loss else None,
        "grpo_reward": _mean(reward), "grpo_steps_averaged": len(reward), "grpo_components": dims,
        "rating": None if rating is None else {"model": final, "rating": rating["rating"], "lo": rating["lo"], "hi": rating["hi"]},
        "checklist_passed": sum(bool(v.get("passed")) for v in checklist.values()) if checklist else None,
        "checklist_total": len(ChecklistItem) if checklist else None,
    }


def diff_interval(a: list[float], b: list[float], n: int = 1000, seed: int = 0) -> tuple[float, float, float] | None:
    """mean(b) - mean(a) with a 95% bootstrap interval (each side resampled on its own: the steps are not paired)."""
    if not a or not b:
        return None
    rng = random.Random(seed)
    draws = sorted(sum(rng.choice(b) for _ in b) / len(b) - sum(rng.choice(a) for _ in a) / len(a) for _ in range(n))
    return sum(b) / len(b) - sum(a) / len(a), draws[int(0.025 * (n - 1))], draws[int(0.975 * (n - 1))]


def reward_deltas(a: RunStore, b: RunStore, n_boot: int = 1000) -> dict[str, dict[str, Any]]:
    """The total reward and each dimension: B minus A over each run's last LAST_STEPS GRPO steps, with an interval."""
    out: dict[str, dict[str, Any]] = {}
    for name, key in [("reward", "reward"), *[(d, f"rewards/{d}/mean") for d in DIMENSIONS]]:
        va, vb = _last(a.metric_series("grpo", key)[2]), _last(b.metric_series("grpo", key)[2])
        got = diff_interval(va, vb, n_boot)
        out[name] = {"a": _mean(va), "b": _mean(vb), "n_a": len(va), "n_b": len(vb),
                     "delta": got and got[0], "lo": got and got[1], "hi": got and got[2]}
    return out


def _final_heldout(store: RunStore) -> tuple[str, list[dict]] | None:
    """The final model's held-out answers in prompt order, from the eval stage's results."""
    rows = store.results("eval", "heldout")
    for model in FINAL_MODELS:
        mine = [rows[f"{model}/{k}"] for k in range(len(rows)) if f"{model}/{k}" in rows]
        if mine:
            return model, mine
    return None


def _paired(a: RunStore, b: RunStore) -> tuple[str, str, list[tuple[dict, dict]]] | None:
    fa, fb = _final_heldout(a), _final_heldout(b)
    if fa is None or fb is None:
        return None
    pairs = [(ra, rb) for ra, rb in zip(fa[1], fb[1]) if ra["prompt"] == rb["prompt"]]
    return (fa[0], fb[0], pairs) if pairs else None


def heldout_deltas(a: RunStore, b: RunStore, n_boot: int = 1000) -> dict[str, Any] | None:
    """Per dimension, B's final model minus A's on the same held-out prompts (paired), with a bootstrap interval."""
    from engine.evaluation.ratings import paired_interval

    got = _paired(a, b)
    if got is None:
        return None
    model_a, model_b, pairs = got
    dims = {}
    for d in DIMENSIONS:
        diffs = [rb["scores"][d] - ra["scores"][d] for ra, rb in pairs
                 if (ra.get("scores") or {}).get(d) is not None and (rb.get("scores") or {}).get(d) is not None]
        mean, lo, hi = paired_interval(diffs, n_boot)
        dims[d] = {"n": len(diffs), "delta": mean if diffs else None, "lo": lo if diffs else None, "hi": hi if diffs else None}
    return {"models": [model_a, model_b], "prompts": len(pairs), "dims": dims}


def final_tournament(a: RunStore, b: RunStore, label_a: str, label_b: str, weights: dict[str, float],
                     n_boot: int = 200) -> dict[str, Any] | None:
    """The two runs' final models against each other on the shared held-out prompts (both orders, the heuristic
    judge, as the offline eval does), Bradley-Terry ratings with bootstrap intervals. None unless both have one."""
    from engine.evaluation.tournament import ratings_table, tournament
    from engine.judging.heuristic import heuristic_pairwise, heuristic_scores

    got = _paired(a, b)
    if got is None:
        return None
    _, _, pairs = got
    outputs = {label_a: [ra["output"] for ra, _ in pairs], label_b: [rb["output"] for _, rb in pairs]}
    prompts = [[{"role": "user", "content": ra["prompt"]}] for ra, _ in pairs]
    matches, _ = tournament(outputs, prompts, heuristic_pairwise(heuristic_scores, weights))
    table, _ = ratings_table(matches, [label_a, label_b], n_boot)
    return {"judge": "heuristic", "prompts": len(pairs), "ratings": table}


def compare_runs(dir_a: Path, dir_b: Path, n_boot: int = 1000, labels: tuple[str, str] | None = None) -> dict[str, Any]:
    """Everything `aba compare` prints: config diff, reward deltas, held-out deltas, the final-model tournament
    (its two models named `labels`, by default A:<id> and B:<id>)."""
    label_a, label_b = labels or (f"A:{dir_a.name}", f"B:{dir_b.name}")
    from engine.config import load
    from engine.config.diff import config_diff, flat

    cfg_a, cfg_b = load(dir_a / "config.toml"), load(dir_b / "config.toml")
    with RunStore(dir_a / "run.db", readonly=True) as a, RunStore(dir_b / "run.db", readonly=True) as b:
        keys_a, keys_b = set(a.metric_keys()), set(b.metric_keys())
        return {
            "a": {"id": dir_a.name, "name": a.run_info().get("name", "")},
            "b": {"id": dir_b.name, "name": b.run_info().get("name", "")},
            "config_diff": config_diff(flat(cfg_a), flat(cfg_b)),
            "grpo_reward_deltas": reward_deltas(a, b, n_boot),
            "heldout_deltas": heldout_deltas(a, b, n_boot),
            "tournament": final_tournament(a, b, label_a, label_b, cfg_a.grpo.reward_weights),
            "shared_metric_keys": [f"{s}/{k}" for s, k in sorted(keys_a & keys_b)],
        }


def metric_keys(run_dirs: list[Path]) -> list[str]:
    """`stage/key` names any of these runs has rows for: what the runs screen offers to overlay."""
    keys: set[tuple[str, str]] = set()
    for d in run_dirs:
        with RunStore(d / "run.db", readonly=True) as s:
            keys |= set(s.metric_keys())
    return [f"{s}/{k}" for s, k in sorted(keys)]


def compare_marked(paths: list[Path], key: str | None = None, default_key: str = "grpo/reward") -> dict[str, Any]:
    """The runs screen's compare pane for two or more marked runs: each later run set against the first by
    `compare_runs` (the numbers `aba compare` prints), the config keys that differ across all of them, and one
    metric's series per run to overlay (`key`, else `default_key`, else the first key any run has)."""
    from engine.config import load
    from engine.config.diff import differing_keys, flat, short_value

    flats = [flat(load(p / "config.toml")) for p in paths]
    diff = [(k, [short_value(f.get(k)) for f in flats]) for k in differing_keys(flats)]
    keys = metric_keys(paths)
    key = key if key in keys else (default_key if default_key in keys else (keys[0] if keys else None))
    pairs = {p.name: compare_runs(paths[0], p, labels=(paths[0].name, p.name)) for p in paths[1:]}
    series = []
    if key:
        stage, _, name = key.partition("/")
        for p in paths:
            with RunStore(p / "run.db", readonly=True) as s:
                _, steps, values = s.metric_series(stage, name)
            series.append((p.name, steps, values))
    return {"ids": [p.name for p in paths], "diff": diff, "keys": keys, "key": key,
            "deltas": {name: c["grpo_reward_deltas"] for name, c in pairs.items()},
            "tournaments": {name: c["tournament"] for name, c in pairs.items() if c["tournament"]}, "series": series}
