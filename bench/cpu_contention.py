"""Two runs on the same cores: OpenMP's default spin-waiting against the passive wait `engine` sets.

A stage worker takes every core by default (run.torch_threads = auto). That is right when it is alone, but the panel,
a second run, a sweep's next run or a test worker often share the cores with it, and torch's OpenMP pool spins while
it waits for work, stealing the cores the other job needs. `engine/__init__.py` sets OMP_WAIT_POLICY=PASSIVE (a
user's own value wins). This bench runs the real thing: `aba demo --stages datagen,judge,sft` (the demo's SFT on the
tiny model, real TRL), one alone and two at once, under OpenMP's default (OMP_WAIT_POLICY set empty: engine keeps
a value that is set, and the OpenMP runtime reads an empty one as unset) and under PASSIVE. The time is the sft stage's own, from
the run database. Prints the two-at-once slowdown the setting removes (default / passive) and its cost alone
(passive / default, target <= 1.05).

    python bench/cpu_contention.py [--steps 36] [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _util import ROOT

POLICIES = {"default": "", "passive": "PASSIVE"}


def _sft_seconds(runs: Path) -> float:
    from engine.store import RunStore

    (run_dir,) = [p for p in runs.iterdir() if (p / "run.db").exists()]
    with RunStore(run_dir / "run.db", readonly=True) as store:
        row = store.stage("sft")
    if row is None or row.status != "succeeded":
        raise SystemExit(f"sft did not succeed in {run_dir}: {row and row.reason}")
    return row.ended - row.started


def sft(jobs: int, steps: int, policy: str, tmp: Path) -> float:
    """The slowest sft stage's seconds of `jobs` demo runs started together under one OpenMP wait policy."""
    env = dict(os.environ, OMP_WAIT_POLICY=POLICIES[policy], HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    dirs = [Path(tempfile.mkdtemp(dir=tmp)) for _ in range(jobs)]
    procs = [subprocess.Popen([sys.executable, "-m", "engine.cli", "demo", "--runs-dir", str(d), "--stages",
                               "datagen,judge,sft", "--set", f"sft.max_steps={steps}"], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for d in dirs]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"aba demo failed (exit {p.returncode}): {err[-2000:]}")
    return max(_sft_seconds(d) for d in dirs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=36, help="SFT steps per run (the demo's own: 36)")
    ap.add_argument("--quick", action="store_true",
                    help="1 step, two runs at once under the passive policy only: to check the bench runs")
    args = ap.parse_args()
    steps = 1 if args.quick else args.steps
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"cpu_contention: the demo's sft, {steps} steps, torch threads = every core ({cores}), load {load:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:  # the machinery only (the default policy's slow side is what takes minutes)
            print(f"two runs at once: passive {sft(2, steps, 'passive', Path(tmp)):.1f} s (--quick: no default side, "
                  "no ratio)")
            return
        t = {(jobs, policy): sft(jobs, steps, policy, Path(tmp)) for jobs in (1, 2) for policy in POLICIES}
    print(f"one run alone: default {t[1, 'default']:.1f} s, passive {t[1, 'passive']:.1f} s "
          f"(passive / default {t[1, 'passive'] / t[1, 'default']:.2f}, target <= 1.05)")
    print(f"two runs at once: default {t[2, 'default']:.1f} s, passive {t[2, 'passive']:.1f} s "
          f"(default / passive {t[2, 'default'] / t[2, 'passive']:.1f}x)")


if __name__ == "__main__":
    main()
