"""A stage added the way a newcomer adds one: this module plus one registry entry (ABA_STAGE_MODULES in tests)."""

from __future__ import annotations


def run(ctx) -> None:
    ctx.log("tally: counting to three")
    for step in range(3):
        ctx.metrics(step, {"count": float(step + 1)})
        ctx.progress(step + 1, 3)
