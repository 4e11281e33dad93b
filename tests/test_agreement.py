"""Krippendorff's alpha as the panel computes it (sums over pairs) equals the `krippendorff` package's."""

from __future__ import annotations

import krippendorff
import numpy as np
import pytest

from engine.evaluation.agreement import krippendorff_alpha


def _package(a, b) -> float:
    return float(krippendorff.alpha(reliability_data=np.array([a, b], dtype=float), level_of_measurement="interval"))


@pytest.mark.parametrize("seed", range(6))
def test_alpha_equals_the_krippendorff_package(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    judge = rng.random(n).round(int(rng.integers(1, 3)))  # one or two decimals: many ties
    human = np.clip(judge + rng.normal(0, rng.random() * 0.5, n), 0, 1).round(2)
    assert krippendorff_alpha(judge.tolist(), human.tolist()) == pytest.approx(_package(judge, human), abs=1e-12)


def test_alpha_extremes_and_undefined():
    assert krippendorff_alpha([0.1, 0.5, 0.9], [0.1, 0.5, 0.9]) == pytest.approx(1.0)
    opposite = ([0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0])
    assert krippendorff_alpha(*opposite) == pytest.approx(_package(*opposite)) and krippendorff_alpha(*opposite) < 0
    assert krippendorff_alpha([0.5], [0.5]) is None  # one unit
    assert krippendorff_alpha([0.3, 0.3], [0.3, 0.3]) is None  # no variation: undefined (the package says NaN)
