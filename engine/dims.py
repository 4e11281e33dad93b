"""The nine judge dimensions of the Entropy-Joy plan and the weighted reward over them."""

from __future__ import annotations

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


def compute_reward(scores: dict[str, float], weights: dict[str, float]) -> float:
    """Aggregate nine-dimension scores into one reward (the seed's Strategy A)."""
    return sum(scores[dim] * weights[dim] for dim in scores)


def equal_weights() -> dict[str, float]:
    return {dim: 1.0 / len(DIMENSIONS) for dim in DIMENSIONS}
