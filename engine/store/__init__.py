"""The run database: one SQLite file per run, the single source of truth. All SQL lives in this package.

`RunStore` is one class assembled from rooms that each own some tables: `db` (connection, schema, migrations),
`stages` (run, stages, attempts, heartbeats, cancel), `telemetry` (metrics, logs, events, artifacts, samples,
results), `traces` (prompts, traces, call ledger, judge scores), `review` (human edits) and `lineage` (data
copied in from another run or a file, and where it came from), `exchanges` (the playground's kept answers).
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.store.db import (MIGRATIONS, SCHEMA_VERSION, Database, StoreError, disk_full, free_space, human_bytes,
                             read_only, write_failure)
from engine.store.exchanges import ExchangesMixin
from engine.store.lineage import LineageMixin
from engine.store.review import ReviewMixin
from engine.store.stages import FINAL, STATUSES, AttemptDecision, StageRow, StagesMixin, StageStatus
from engine.store.telemetry import EventRow, LogRow, MetricRow, TelemetryMixin
from engine.store.traces import TracesMixin

__all__ = ["FINAL", "MIGRATIONS", "SCHEMA_VERSION", "STATUSES", "AttemptDecision", "EventRow", "LogRow", "MetricRow",
           "RunStore", "StageRow", "StageStatus", "StoreError", "disk_full", "free_space", "human_bytes",
           "open_for_edits", "read_only", "write_failure"]


class RunStore(StagesMixin, TelemetryMixin, TracesMixin, ReviewMixin, LineageMixin, ExchangesMixin, Database):
    """Typed access to one run's database. Safe to share between threads of one process."""

    def __enter__(self) -> RunStore:
        return self


def open_for_edits(path: str | Path) -> tuple[RunStore, str | None]:
    """A writer when the run can be written; otherwise a reader and the one line that says why edits are off."""
    path = Path(path)
    if path.exists() and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
        return RunStore(path, readonly=True), f"{path} is read-only (not writable by this user): edits are off"
    try:
        return RunStore(path), None
    except StoreError as err:
        if not read_only(err):
            raise
        why = str(err).rsplit("(", 1)[-1].rstrip(")")
        return RunStore(path, readonly=True), f"{path} is read-only ({why}): edits are off"
