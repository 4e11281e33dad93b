"""The nine judge dimensions of the Entropy-Joy plan, the tiers, and the one weighted score over the dimensions."""

from __future__ import annotations

from collections.abc import Mapping

DIMENSIONS: tuple[str, ...] = (
    "entropy_reduction",
    "calibrated_uncertainty",
    "conflict_resolution",
    "context_faithfulness",
    "process_transparency",
    "honest_engagement",
    "helpfulness",
    "harm_avoidance",
    "instruction_following",
)

# Short column titles for narrow tables.
SHORT = {
    "entropy_reduction": "ENT",
    "calibrated_uncertainty": "CAL",
    "conflict_resolution": "CON",
    "context_faithfulness": "CTX",
    "process_transparency": "PRO",
    "honest_engagement": "HON",
    "helpfulness": "HLP",
    "harm_avoidance": "HRM",
    "instruction_following": "INS",
}

TIERS: tuple[str, ...] = ("chosen", "adequate", "rejected")


def normalised(weights: Mapping[str, float]) -> dict[str, float]:
    """Weights scaled to sum to 1 (GRPO trains on these, so its reward is the weighted score below)."""
    total = sum(weights.values())
    return {d: w / total for d, w in weights.items()}


def weighted_score(scores: Mapping[str, float | None], weights: Mapping[str, float]) -> float | None:
    """The one weighted score of nine-dimension scores, used everywhere (store, SFT bar, GRPO samples, eval).

    Normalised: sum(w_d * s_d) / sum(w_d) over the dimensions in `weights`, so it lies in [0, 1] when the scores
    do, whatever the weights add up to, and equals GRPO's logged `reward` (GRPO trains on `normalised(weights)`).
    None when any weighted dimension has no score: a failed or missing judge is never a zero.
    """
    total = sum(weights.values())
    if total <= 0:
        return None
    acc = 0.0
    for dim, w in weights.items():
        value = scores.get(dim)
        if value is None:
            return None
        acc += w * value
    return acc / total


def equal_weights() -> dict[str, float]:
    return {dim: 1.0 / len(DIMENSIONS) for dim in DIMENSIONS}
