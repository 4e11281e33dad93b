"""Pairwise tournament ratings: Bradley-Terry (ties count half to each side) on the Elo scale, bootstrap intervals."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

ELO_SCALE = 400 / math.log(10)
BASE = 1000.0


@dataclass(frozen=True)
class Match:
    a: str
    b: str
    score: float  # 1: a won, 0: b won, 0.5: tie


def bradley_terry(matches: list[Match], players: list[str], iters: int = 500, prior: float = 0.5) -> dict[str, float]:
    """Strengths by the MM algorithm (Hunter 2004), with a small prior of `prior` draws against a virtual average
    player so that a player who never lost still has a finite rating. Returned on the Elo scale, mean BASE."""
    wins = {p: prior for p in players}
    games: dict[tuple[str, str], float] = {}
    for m in matches:
        wins[m.a] += m.score
        wins[m.b] += 1 - m.score
        key = (m.a, m.b) if m.a < m.b else (m.b, m.a)
        games[key] = games.get(key, 0.0) + 1
    strength = {p: 1.0 for p in players}
    for _ in range(iters):
        new = {}
        for p in players:
            denom = 2 * prior / (strength[p] + 1.0)  # the virtual games against strength 1
            for (x, y), n in games.items():
                if p in (x, y):
                    q = y if p == x else x
                    denom += n / (strength[p] + strength[q])
            new[p] = wins[p] / denom if denom else strength[p]
        mean_log = sum(math.log(v) for v in new.values()) / len(new)
        new = {p: v / math.exp(mean_log) for p, v in new.items()}
        done = max(abs(math.log(new[p] / strength[p])) for p in players) < 1e-9
        strength = new
        if done:
            break
    return {p: BASE + ELO_SCALE * math.log(strength[p]) for p in players}


def bootstrap(matches: list[Match], players: list[str], n: int = 1000, seed: int = 0) -> dict[str, tuple[float, float]]:
    """95% intervals by resampling matches with replacement."""
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {p: [] for p in players}
    for _ in range(n):
        draw = [matches[rng.randrange(len(matches))] for _ in matches]
        for p, r in bradley_terry(draw, players, iters=200).items():
            samples[p].append(r)
    out = {}
    for p, xs in samples.items():
        xs.sort()
        out[p] = (xs[int(0.025 * (len(xs) - 1))], xs[int(0.975 * (len(xs) - 1))])
    return out


def win_rates(matches: list[Match], players: list[str]) -> list[list[float | None]]:
    """matrix[i][j]: share of points player i took from player j (ties count half); None where they never met."""
    pts: dict[tuple[str, str], list[float]] = {}
    for m in matches:
        pts.setdefault((m.a, m.b), []).append(m.score)
        pts.setdefault((m.b, m.a), []).append(1 - m.score)
    return [[(sum(pts[(a, b)]) / len(pts[(a, b)])) if (a, b) in pts else None for b in players] for a in players]


def record(matches: list[Match], player: str) -> tuple[int, int, int]:
    w = l = t = 0
    for m in matches:
        if player not in (m.a, m.b):
            continue
        s = m.score if m.a == player else 1 - m.score
        w, l, t = w + (s == 1), l + (s == 0), t + (s == 0.5)
    return w, l, t


def paired_interval(diffs: list[float], n: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of paired differences with a bootstrap 95% interval."""
    if not diffs:
        return 0.0, 0.0, 0.0
    rng = random.Random(seed)
    means = sorted(sum(diffs[rng.randrange(len(diffs))] for _ in diffs) / len(diffs) for _ in range(n))
    return sum(diffs) / len(diffs), means[int(0.025 * (n - 1))], means[int(0.975 * (n - 1))]
