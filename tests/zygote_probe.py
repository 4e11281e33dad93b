"""A stand-in worker module for tests/test_zygote.py: prints what a forked or fresh worker starts with."""

from __future__ import annotations

import json
import os
import sys
import time


def main(argv: list[str]) -> int:
    code, sleep_s = int(argv[0]), float(argv[1])
    print(json.dumps({"torch_loaded": "torch" in sys.modules, "pid": os.getpid(), "sid": os.getsid(0),
                      "ppid": os.getppid(), "cwd": os.getcwd(), "probe_env": os.environ.get("PROBE_ENV"),
                      "stdin": sys.stdin.read()}), flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    print("unflushed line")  # no flush: an unbuffered stdout has written it already
    time.sleep(sleep_s)
    if code < 0:
        raise RuntimeError("probe failed on purpose")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
