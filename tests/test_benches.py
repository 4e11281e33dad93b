"""Every benchmark in bench/ runs in its quick mode (tiny sizes, seconds), so a benchmark cannot rot unseen.

The quick figures are not the targets' (those are stated at full size: `make bench`); this checks each bench still
runs to its end and prints what it says it prints.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

BENCH = ROOT / "bench"
# Each bench and a line its quick run must print (the figure it exists for).
EXPECT = {
    "cpu_contention.py": "two runs at once: default",
    "datagen_throughput.py": "of the cap (target >= 0.95)",
    "export.py": "export: Q8_0 GGUF of a",
    "grpo_judge.py": "step-time ratio vs offline judge: concurrent",
    "lifecycle_soak.py": "lifecycle soak: 2 sequences",
    "loopwatch.py": "loopwatch: busy time by what ran",
    "merge.py": "equal to PEFT merge_and_unload:",
    "store_ingest.py": "store_ingest: incremental read with 20,000 rows",
    "train_overhead.py": "train_overhead: same work on both sides",
    "ui_panel.py": "ui_panel: a 5,000-line trace opens",
}
MODULES = {"_util.py", "ui_live.py"}  # imported by the benches above, not run on their own
# Benches that need hardware this suite does not have, and the test that runs what they can do without it.
ELSEWHERE = {"gpu_check.py": "tests/test_gpu_check.py", "fault_soak.py": "tests/test_fault_soak.py"}  # CUDA; its --dry-run (the plan) runs on CPU there


def test_every_bench_is_listed():
    assert {p.name for p in BENCH.glob("*.py")} - MODULES == set(EXPECT) | set(ELSEWHERE)
    assert all((ROOT / test).exists() for test in ELSEWHERE.values())


@pytest.mark.parametrize("bench", sorted(EXPECT))
def test_bench_quick_mode_runs(bench, _model_cache):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(BENCH / bench), "--quick"], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert EXPECT[bench] in proc.stdout, proc.stdout[-3000:]
