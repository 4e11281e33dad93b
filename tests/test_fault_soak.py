"""The fault soak's quick round (bench/fault_soak.py --quick): 10 random faults across real demo runs and their
resumes, every invariant checked after each; it must report 0 violations."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="kill -9 and tmpfs are POSIX")


def test_fault_soak_quick_finds_no_violation():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "fault_soak.py"), "--quick"], capture_output=True,
                          text=True, cwd=ROOT, timeout=1800)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0 and "0 violations over 10 faults" in last, proc.stdout[-3000:] + proc.stderr[-2000:]
