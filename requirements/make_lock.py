"""Write requirements/lock.txt: the exact versions installed in a venv the whole test suite passed in.

    make lock                       # = .venv/bin/python requirements/make_lock.py
    python requirements/make_lock.py --print   # the same text on stdout, the lock untouched

The lock is a pip constraints file (`pip install -c requirements/lock.txt ...`): it pins every package a set-up may
install and installs nothing by itself, so one lock serves `make run` (the core), `make test` (the test extra) and
every platform (a pin for a package that a platform does not need, triton on Windows, is simply unused there).
It is `pip freeze --all --exclude-editable` with two edits: pip itself is left out, and torch's local label (+cpu)
is dropped, so that `torch==X` matches the CPU build from PyTorch's CPU index (or a local wheel) and Windows'
and macOS' plain wheels alike. torchvision is never in it: `make test` removes it (see the Makefile).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HEADER = """\
# The versions the tests passed on: a pip constraints file, used as `pip install -c requirements/lock.txt ...`.
# Made by `make lock` (requirements/make_lock.py) from a venv where `make test` passed: pip freeze --all
# --exclude-editable, without pip, torch without its local label (+cpu). Ranges for people installing the
# package live in pyproject.toml; `make upgrade-check` tries the newest versions inside them.
# Python {py}, {platform}.
"""


def main() -> None:
    out = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all", "--exclude-editable"], check=True,
                         capture_output=True, text=True).stdout
    lines = []
    for line in out.splitlines():
        if not line or line.startswith("#") or line.startswith("-e "):
            continue
        name = re.split(r"[=<>@ ]", line, maxsplit=1)[0].lower().replace("_", "-")
        if name in ("pip", "torchvision", "aba-tui"):
            continue
        lines.append(re.sub(r"^(torch==[^+\s]+)\+\S+$", r"\1", line))
    py = ".".join(map(str, sys.version_info[:3]))
    text = HEADER.format(py=py, platform=sys.platform) + "\n".join(sorted(lines, key=str.lower)) + "\n"
    if "--print" in sys.argv:  # `make upgrade-check` compares the newest versions with the lock
        sys.stdout.write(text)
        return
    path = Path(__file__).with_name("lock.txt")
    path.write_text(text, encoding="utf-8")
    print(f"{path}: {len(lines)} pins")


if __name__ == "__main__":
    main()
