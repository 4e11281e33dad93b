"""A test-only stage that ignores cancel requests (for the hard-kill path)."""

import signal
import time


def run(ctx) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ctx.log("stubborn")
    while True:
        time.sleep(0.1)
