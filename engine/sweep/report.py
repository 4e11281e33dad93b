"""`aba sweep-report`: a sweep's runs ranked by the objective with 95% bootstrap intervals, which of them the data
cannot tell apart, a plot of the objective against each swept key, the per-dimension effect of each swept weight,
and the best run's config written out for `aba run`.

Objectives: `heldout` (default: the eval stage's mean held-out weighted score of the run's final model; the held-out
prompts are the same in every run, so differences to the best are paired by prompt), `reward` (GRPO's reward over
its last 10 logged steps) and `rating` (the final model's tournament rating; each run's tournament is its own, so
ratings compare only loosely across runs)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from engine import config as config_mod
from engine.dims import DIMENSIONS, weighted_score
from engine.errors import UserError
from engine.store import RunStore
from engine.sweep import sweeps

LAST_STEPS = 10
BOOTSTRAP = 2000


def _interval(values: list[float], seed: int) -> tuple[float, float | None, float | None]:
    """Mean and its 95% percentile-bootstrap interval (scipy.stats.bootstrap); no interval under two values."""
    mean = sum(values) / len(values)
    if len(values) < 2 or len(set(values)) < 2:
        return mean, (mean if len(values) >= 2 else None), (mean if len(values) >= 2 else None)
    import numpy as np
    from scipy.stats import bootstrap

    res = bootstrap((np.asarray(values, dtype=float),), np.mean, confidence_level=0.95, n_resamples=BOOTSTRAP,
                    method="percentile", rng=np.random.default_rng(seed))
    return mean, float(res.confidence_interval.low), float(res.confidence_interval.high)


def _final_model(heldout: dict[str, dict]) -> str | None:
    models = []
    for row in heldout.values():
        if row["model"] not in models:
            models.append(row["model"])
    trained = [m for m in models if m != "ties"]
    return (trained or models or [None])[-1]


def _reference(manifest: dict[str, Any]) -> dict[str, float]:
    """The weights every run's held-out scores are weighed with: the manifest's, else the base config's, else equal."""
    from engine.dims import equal_weights

    if manifest.get("reference_weights"):
        return manifest["reference_weights"]
    try:
        return sweeps.reference_weights(manifest["configs"][0], [])
    except (UserError, IndexError, KeyError):
        return equal_weights()


def _run_row(run_dir: Path, keys: list[str], objective: str, seed: int, weights: dict[str, float]) -> dict[str, Any]:
    from engine.config.diff import flat
    from engine.runner import supervisor as sup

    with RunStore(run_dir / "run.db", readonly=True) as store:
        info = store.run_info()
        rows = sup.notice_crashes(store)
        heldout = store.results("eval", "heldout")
        ratings = store.results("eval", "ratings")
        _, _, rewards = store.metric_series("grpo", "reward")
    cfg = config_mod.load(run_dir / "config.toml")
    flat_cfg = flat(cfg)
    final = _final_model(heldout)
    per_prompt = {}  # prompt index -> weighted score of the final model
    dims: dict[str, list[float]] = {d: [] for d in DIMENSIONS}
    for key, row in heldout.items():
        model, _, k = key.rpartition("/")
        if model != final:
            continue
        w = weighted_score(row.get("scores") or {}, weights)  # one yardstick for all runs, not each run's own
        if w is not None:
            per_prompt[int(k)] = w
        for d in DIMENSIONS:
            v = (row.get("scores") or {}).get(d)
            if v is not None:
                dims[d].append(v)
    out: dict[str, Any] = {
        "id": run_dir.name, "name": info.get("name", ""), "state": sup.run_state(rows),
        "params": {k: (_config_label(run_dir) if k == "config" else flat_cfg.get(k)) for k in keys},
        "final_model": final, "per_prompt": per_prompt,
        "dims": {d: (sum(v) / len(v) if v else None) for d, v in dims.items()},
        "value": None, "lo": None, "hi": None, "n": 0,
    }
    if objective == "heldout" and per_prompt:
        vals = list(per_prompt.values())
        out["value"], out["lo"], out["hi"] = _interval(vals, seed)
        out["n"] = len(vals)
    elif objective == "reward":
        vals = [r for r in rewards if r is not None][-LAST_STEPS:]
        if vals:
            out["value"], out["lo"], out["hi"] = _interval(vals, seed)
            out["n"] = len(vals)
    elif objective == "rating" and final in ratings:
        r = ratings[final]
        out["value"], out["lo"], out["hi"], out["n"] = r["rating"], r["lo"], r["hi"], 1
    return out


def _config_label(run_dir: Path) -> str | None:
    """Which of the sweep's configs (`--configs a.toml,b.toml`) a run came from."""
    member = sweeps.membership(run_dir)
    return (member or {}).get("params", {}).get("config")


def _paired_vs_best(best: dict[str, Any], row: dict[str, Any], seed: int) -> dict[str, Any] | None:
    common = sorted(set(best["per_prompt"]) & set(row["per_prompt"]))
    if len(common) < 2:
        return None
    diffs = [row["per_prompt"][k] - best["per_prompt"][k] for k in common]
    mean, lo, hi = _interval(diffs, seed)
    return {"delta": mean, "lo": lo, "hi": hi, "n": len(common)}


def find_runs(root: Path, manifest: dict[str, Any]) -> list[Path]:
    """The sweep's runs: those the manifest lists, plus any run named with the sweep id (emitted sweeps ran
    elsewhere, as plain `aba run --name ...`, on the shared runs folder)."""
    from engine.runner import supervisor as sup

    listed = [root / r["id"] for r in manifest.get("runs", []) if (root / r["id"] / "run.db").exists()]
    seen = {p.name for p in listed}
    for s in sup.list_runs(root):
        if s.id not in seen and manifest["id"] in s.name.split():
            listed.append(s.path)
    return listed


def _effects(rows: list[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
    """Per swept key: the objective's mean at each value (averaged over the other keys), and for a reward weight
    the least-squares slope of each held-out dimension score against the weight."""
    from scipy.stats import linregress

    out: dict[str, Any] = {}
    scored = [r for r in rows if r["value"] is not None]
    for key in keys:
        by_value: dict[str, list[float]] = {}
        for r in scored:
            by_value.setdefault(repr(r["params"].get(key)), []).append(r["value"])
        entry: dict[str, Any] = {"means": {k: sum(v) / len(v) for k, v in by_value.items()}}
        xs = [r["params"].get(key) for r in rows]
        if ".reward_weights." in key and all(isinstance(x, (int, float)) for x in xs) and len(set(xs)) > 1:
            slopes = {}
            for d in DIMENSIONS:
                pts = [(r["params"][key], r["dims"][d]) for r in rows if r["dims"][d] is not None]
                if len({x for x, _ in pts}) > 1:
                    slopes[d] = float(linregress([x for x, _ in pts], [y for _, y in pts]).slope)
            entry["dimension_slopes"] = slopes
        out[key] = entry
    return out


def _plot(rows: list[dict[str, Any]], keys: list[str], objective: str, path: Path) -> bool:
    scored = [r for r in rows if r["value"] is not None]
    plot_keys = [k for k in keys if all(isinstance(r["params"].get(k), (int, float)) for r in scored)]
    if not scored or not plot_keys:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(plot_keys), figsize=(4.5 * len(plot_keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], plot_keys):
        xs = [r["params"][key] for r in scored]
        ys = [r["value"] for r in scored]
        lo = [r["value"] - r["lo"] if r["lo"] is not None else 0 for r in scored]
        hi = [r["hi"] - r["value"] if r["hi"] is not None else 0 for r in scored]
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", capsize=3)
        positive = [x for x in xs if x > 0]
        if len(positive) == len(xs) and max(xs) / min(xs) >= 50:
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(objective)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{objective} (95% bootstrap intervals) against each swept key")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def sweep_report(root: Path, sweep_id: str, objective: str | None = None, out_dir: Path | None = None) -> dict[str, Any]:
    manifest = sweeps.load(root, sweep_id)
    objective = objective or manifest.get("objective") or "heldout"
    if objective not in sweeps.OBJECTIVES:
        raise UserError(f"--objective {objective!r}: use one of {', '.join(sweeps.OBJECTIVES)}")
    keys = (["config"] if len(manifest.get("configs", [])) > 1 else []) + list(manifest.get("keys", []))
    run_dirs = find_runs(root, manifest)
    if not run_dirs:
        raise UserError(f"sweep {manifest['id']}: none of its runs is in {root} yet")
    weights = _reference(manifest)
    rows = [_run_row(d, keys, objective, seed=i, weights=weights) for i, d in enumerate(run_dirs)]
    rows.sort(key=lambda r: (r["value"] is None, -(r["value"] if r["value"] is not None else 0.0)))
    best = rows[0] if rows and rows[0]["value"] is not None else None
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank if r["value"] is not None else None
        r["overlaps_best"] = None
        r["vs_best"] = None
        if best is None or r["value"] is None:
            continue
        if r is best:
            r["overlaps_best"] = True
            continue
        if r["lo"] is not None and best["lo"] is not None:
            r["overlaps_best"] = r["hi"] >= best["lo"] and best["hi"] >= r["lo"]
        if objective == "heldout":
            r["vs_best"] = _paired_vs_best(best, r, seed=r["rank"])
    out_dir = out_dir or root / "sweeps" / manifest["id"]
    out_dir.mkdir(parents=True, exist_ok=True)
    plot = out_dir / f"objective-{objective}.png"
    best_toml = None
    if best is not None:
        cfg = config_mod.load(root / best["id"] / "config.toml")
        cfg.run.name = f"{cfg.run.name} best-of-{manifest['id']}"
        best_toml = out_dir / "best.toml"
        config_mod.save(cfg, best_toml)
    for r in rows:
        r.pop("per_prompt", None)
    return {
        "sweep": manifest["id"], "objective": objective, "keys": keys, "runs": rows, "reference_weights": weights,
        "best": best["id"] if best else None, "best_config": str(best_toml) if best_toml else None,
        "tied_with_best": [r["id"] for r in rows if r is not best and _tied(r)],
        "effects": _effects(rows, keys),
        "plot": str(plot) if _plot(rows, keys, objective, plot) else None,
        "finished": sum(r["state"] == "succeeded" for r in rows), "total": len(rows),
    }


def _tied(r: dict[str, Any]) -> bool:
    """Not told apart from the best: the paired difference's interval holds 0, or (unpaired) the intervals overlap."""
    if r["vs_best"] is not None and r["vs_best"]["lo"] is not None:
        return r["vs_best"]["lo"] <= 0.0 <= r["vs_best"]["hi"]
    return bool(r["overlaps_best"])


def fmt(v: float | None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.{digits}f}"
