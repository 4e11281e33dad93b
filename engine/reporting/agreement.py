"""Judge-versus-human agreement per dimension: n, MAE, Spearman, Kendall tau-b and Krippendorff's alpha."""

from __future__ import annotations

import math
from typing import Any

from engine.store import RunStore


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


def krippendorff_alpha(a: list[float], b: list[float]) -> float | None:
    """Chance-corrected agreement of two raters on 0..1 scores (interval level), from the `krippendorff` package.

    None when it is undefined: fewer than two units, or no variation at all (every score the same).
    """
    if len(a) < 2 or len(set(a) | set(b)) < 2:
        return None
    import krippendorff
    import numpy as np

    value = float(krippendorff.alpha(reliability_data=np.array([a, b], dtype=float), level_of_measurement="interval"))
    return None if math.isnan(value) else value


def judge_agreement(store: RunStore, dims: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Per dimension (all, or only `dims`: the panel recomputes the edited one), over traces a human re-scored:
    n, mean absolute error, Spearman, Kendall tau-b, and Krippendorff's alpha (chance-corrected: 1 perfect, 0 no
    better than chance, below 0 systematic disagreement)."""
    return {dim: _stats(pairs) for dim, pairs in store.judge_human_pairs(dims).items()}


def pooled_judge_agreement(stores: list[RunStore]) -> dict[str, dict[str, Any]]:
    """The same statistics over several runs' edits. Runs that share lineage share traces (same call keys): each
    trace counts once, with the human score of the newest run given that edited it (its edits are that run's)."""
    stores = sorted(stores, key=lambda s: s.run_info().get("created") or 0.0)
    pooled: dict[str, dict[str, tuple[float, float]]] = {}
    for store in stores:
        for dim, by_trace in store.judge_human_pairs_by_trace().items():
            pooled.setdefault(dim, {}).update(by_trace)
    return {dim: _stats(list(by_trace.values())) for dim, by_trace in pooled.items()}


def _stats(pairs: list[tuple[float, float]]) -> dict[str, Any]:
    judge = [p[0] for p in pairs]
    human = [p[1] for p in pairs]
    return {
        "n": len(pairs),
        "mae": sum(abs(j - h) for j, h in pairs) / len(pairs) if pairs else None,
        "spearman": spearman(judge, human),
        "kendall_tau": kendall_tau_b(judge, human),
        "alpha": krippendorff_alpha(judge, human),
    }
