"""How long a cancelled stage may take to stop: the grace before the hard kill follows its measured step time.

A stage stops only at a step boundary, where it saves a checkpoint. A GRPO step of 8 completions x 1,024 tokens on
an 8B model can outlast a fixed 30 s, and killing it then loses the step and the checkpoint, so the grace is the
larger of run.cancel_grace_s and twice the slowest recent step (the step under way, then the save).
"""

from __future__ import annotations

from engine.store import RunStore

RECENT_STEPS = 20
SCAN_ROWS = 50_000  # metric rows looked back through: a few hundred steps of any stage


def recent_step_times(store: RunStore, stage: str) -> list[float]:
    """The stage's last step times (`step_time_s`, or `<dim>/step_time_s` in grpo-dims), oldest first."""
    after = max(0, store.last_metric_id() - SCAN_ROWS)
    times = [r.value for r in store.metrics_since(after, stage, limit=SCAN_ROWS)
             if r.key.endswith("step_time_s") and r.value is not None]
    return times[-RECENT_STEPS:]


def stop_grace(store: RunStore, stage: str, base_s: float) -> tuple[float, str]:
    """(seconds before the hard kill, one line saying how long the stop may take and why)."""
    times = recent_step_times(store, stage)
    if not times:
        return base_s, (f"cancel: {stage} stops at its next step boundary and saves a checkpoint; "
                        f"killed after {base_s:g} s if it has not (run.cancel_grace_s; no step timed yet)")
    slowest = max(times)
    grace = max(base_s, 2 * slowest)
    why = "2 x the slowest recent step" if grace > base_s else "run.cancel_grace_s"
    return grace, (f"cancel: {stage} stops at its next step boundary and saves a checkpoint; this may take up to "
                   f"{grace:.0f} s ({why}: slowest of the last {len(times)} steps {slowest:.1f} s, "
                   f"run.cancel_grace_s {base_s:g} s) before a hard kill")
