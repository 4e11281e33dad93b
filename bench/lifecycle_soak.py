"""Run lifecycle soak: many random sequences of real detached runs (tests/lifecycle_driver.py), invariants checked
after every step. Prints the sequences run and the violations found (target: 0 in 2,000).

    python bench/lifecycle_soak.py [--sequences 2000] [--seed 0] [--parallel 4] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import _util  # noqa: F401 - puts the repository on sys.path

from tests import lifecycle_driver


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="2 sequences, 2 at a time: checks the bench runs")
    args = parser.parse_args()
    if args.quick:
        args.sequences, args.parallel = 2, 2
    os.environ.update(lifecycle_driver.environment())
    t0 = time.monotonic()
    last = [t0]

    def progress(total: lifecycle_driver.Outcome) -> None:
        if time.monotonic() - last[0] > 30:
            last[0] = time.monotonic()
            print(f"  ... {total.sequences} sequences, {len(total.violations)} violations", flush=True)

    with tempfile.TemporaryDirectory(prefix="aba-soak-") as tmp:
        out = lifecycle_driver.run_sequences(Path(tmp), args.sequences, seed=args.seed, parallel=args.parallel,
                                             progress=progress)
    took = time.monotonic() - t0
    for v in out.violations[:20]:
        print("VIOLATION", v)
    print(f"lifecycle soak: {out.sequences} sequences ({out.steps} steps, seeds {args.seed}..{args.seed + args.sequences - 1})"
          f" in {took:.0f} s: {len(out.violations)} violations")
    print("  " + ", ".join(f"{k}: {v}" for k, v in sorted(out.counts.items())))
    return 1 if out.violations else 0


if __name__ == "__main__":
    sys.exit(main())
