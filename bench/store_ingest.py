"""Run database: batched metric inserts per second, and a reader's "rows newer than N" latency at 1M rows.

Targets (issue 2): >= 200,000 rows/s; < 5 ms per incremental read. Baseline in the same process: the same rows
through a bare sqlite3 executemany into a table with no index, which is the ceiling for this machine.

    python bench/store_ingest.py [--quick]    (--quick: 20,000 rows, to check the bench runs)
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from _util import pct

from engine.store import RunStore

N = 1_000_000
BATCH = 5_000
KEYS = [f"rewards/dim{i}/mean" for i in range(9)] + ["loss", "kl", "reward", "learning_rate", "grad_norm"]


def rows(start: int, n: int):
    t = time.time()
    for i in range(start, start + n):
        yield ("grpo", i // len(KEYS), KEYS[i % len(KEYS)], i * 0.001, t)


def main() -> None:
    global N
    if "--quick" in sys.argv[1:]:  # seconds, to check the bench runs; the targets are stated at 1M rows
        N = 20_000
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(Path(tmp) / "run.db", create=True)
        t0 = time.perf_counter()
        for start in range(0, N, BATCH):
            store.add_metric_rows(rows(start, BATCH))
        ours = N / (time.perf_counter() - t0)

        bare = sqlite3.connect(Path(tmp) / "bare.db", isolation_level=None)
        bare.execute("PRAGMA journal_mode = WAL")
        bare.execute("CREATE TABLE m (id INTEGER PRIMARY KEY, stage TEXT, step INTEGER, key TEXT, value REAL, time REAL)")
        t0 = time.perf_counter()
        for start in range(0, N, BATCH):
            bare.execute("BEGIN")
            bare.executemany("INSERT INTO m (stage, step, key, value, time) VALUES (?,?,?,?,?)", rows(start, BATCH))
            bare.execute("COMMIT")
        baseline = N / (time.perf_counter() - t0)

        # A reader polling for rows newer than its cursor while 1M rows are present.
        reader = RunStore(Path(tmp) / "run.db", readonly=True)
        last = reader.last_metric_id()
        lat = []
        for i in range(200):
            store.add_metric_rows(rows(N + i * 14, 14))  # one training step's worth
            t = time.perf_counter()
            new = reader.metrics_since(last)
            lat.append((time.perf_counter() - t) * 1000)
            last = new[-1].id
        t = time.perf_counter()
        reader.metric_series("grpo", "reward")
        series_ms = (time.perf_counter() - t) * 1000
        print(f"store_ingest: {ours:,.0f} metric rows/s batched ({BATCH}/tx) vs bare sqlite {baseline:,.0f} rows/s "
              f"(ratio {ours / baseline:.2f}); target >= 200,000")
        print(f"store_ingest: incremental read with {N:,} rows: median {pct(lat, 50):.3f} ms, p99 {pct(lat, 99):.3f} ms; "
              f"target < 5 ms")
        print(f"store_ingest: one key's full series ({N // len(KEYS):,} points) by index: {series_ms:.1f} ms")


if __name__ == "__main__":
    main()
