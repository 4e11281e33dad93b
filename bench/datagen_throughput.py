"""Datagen calls against the local OpenAI-compatible test server: 50 ms latency, a 600 requests/minute cap.

Prints the achieved rate as a fraction of the cap (target >= 0.95), duplicates (target 0), and the ratio against
calling one at a time (concurrency 1, no rate limiter) measured in the same process.

    python bench/datagen_throughput.py [--calls 2000] [--rpm 600] [--quick]
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

from _util import ROOT  # noqa: F401  (puts the project on sys.path)

from engine.llm.base import LLMRequest
from engine.llm.limits import LimitedBackend, RetryPolicy
from engine.llm.openai_compat import OpenAIBackend
from tests.fake_openai import FakeOpenAI


def run(srv_url: str, calls: int, rpm: int, concurrency: int) -> tuple[float, list]:
    limited = LimitedBackend(OpenAIBackend("bench", srv_url, timeout_s=10), concurrency, rpm, 10**9, RetryPolicy(3, 0.05))
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda i: limited.call(LLMRequest([{"role": "user", "content": f"prompt {i}"}])), range(calls)))
    return time.perf_counter() - t0, results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rpm", type=int, default=600)
    ap.add_argument("--quick", action="store_true", help="60 calls at 6,000/min: seconds, to check the bench runs")
    args = ap.parse_args()
    if args.quick:
        args.calls, args.rpm = 60, 6000
    with FakeOpenAI(latency_s=0.05) as srv:
        took, results = run(srv.url, args.calls, args.rpm, concurrency=8)
        answered = len(srv.answered)
        unique = len({r["messages"][-1]["content"] for r in srv.answered})
    rate = args.calls / took * 60
    with FakeOpenAI(latency_s=0.05) as srv:
        n1 = min(200, args.calls // 3 if args.quick else args.calls)
        took1, _ = run(srv.url, n1, 10**9, concurrency=1)
    rate1 = n1 / took1 * 60
    print(f"datagen_throughput: {args.calls} calls in {took:.1f} s = {rate:.0f}/min against a cap of {args.rpm}/min: "
          f"{rate / args.rpm:.3f} of the cap (target >= 0.95)")
    print(f"datagen_throughput: duplicates {answered - unique} (target 0); results {len(results)}")
    print(f"datagen_throughput: one at a time, no cap: {rate1:.0f}/min; limited+concurrent / one-at-a-time = {rate / rate1:.2f} "
          f"(the cap, not latency, bounds this setup)")


if __name__ == "__main__":
    main()
