"""The run lifecycle under random interleavings of real detached runs (see tests/lifecycle_driver.py).

200 seeded sequences of start, cancel, skip, resume, kill -9 of workers and drivers, and concurrent readers, with
the invariants checked after every step. LIFECYCLE_SEED replays another set; bench/lifecycle_soak.py runs more.
"""

from __future__ import annotations

import os
import sys

import pytest

from tests import lifecycle_driver

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="kill -9 semantics are POSIX")

SEQUENCES = 200


def test_lifecycle_invariants_hold_under_random_interleavings(tmp_path, monkeypatch):
    for key, value in lifecycle_driver.environment().items():
        monkeypatch.setenv(key, value)
    seed = int(os.environ.get("LIFECYCLE_SEED", "16000"))
    out = lifecycle_driver.run_sequences(tmp_path, SEQUENCES, seed=seed)
    print(f"{out.sequences} sequences, {out.steps} steps, {len(out.violations)} violations; {dict(out.counts)}")
    assert out.sequences == SEQUENCES
    assert out.counts["attempts"] > SEQUENCES // 2  # stages really ran, not only cancels of pending ones
    assert out.counts["workers killed"] and out.counts["drivers killed"]
    assert not out.violations, "\n".join(out.violations[:5])
