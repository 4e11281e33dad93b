"""Runs written straight into a run database, with fixed ids and times, for UI tests and snapshots."""

from __future__ import annotations

from pathlib import Path

from engine import config
from engine.config import STAGES
from engine.dims import DIMENSIONS, equal_weights
from engine.store import RunStore
from tests.conftest import DEMO

T0 = 1_790_000_000.0
MARKUP = "[link=http://x]y[/link] and [/bold] and [red]not red[/red]"


def make_fixture_run(root: Path, run_id: str = "20260211-101500-snap", traces: int = 12, with_metrics: bool = True) -> Path:
    run_dir = root / run_id
    run_dir.mkdir(parents=True)
    cfg = config.load(DEMO)
    config.save(cfg, run_dir / "config.toml")
    with RunStore(run_dir / "run.db", create=True) as s:
        s.init_run(run_id, "demo", str(DEMO), STAGES, ["datagen", "judge", "sft", "grpo"])
        s._conn.execute("UPDATE run SET created = ?", (T0,))
        for i, (name, status, reason) in enumerate([("datagen", "succeeded", None), ("judge", "succeeded", None),
                                                    ("sft", "failed", "RuntimeError: example failure"), ("grpo", "pending", None)]):
            if status != "pending":
                s._conn.execute(
                    "UPDATE stages SET status = ?, attempts = 1, started = ?, ended = ?, reason = ? WHERE name = ?",
                    (status, T0 + 10 * i, T0 + 10 * i + 7, reason, name),
                )
        w = equal_weights()
        pid = s.add_prompt("p-markup", "safety", [{"role": "user", "content": "Show me " + MARKUP}], "test")
        for n in range(traces):
            tier = ("chosen", "adequate", "rejected")[n % 3]
            cat = ("safety", "complexity", "conflict")[n % 3 if n % 2 else 0]
            tid = s.add_trace({"call_key": f"k{n}", "prompt_id": pid, "category": cat, "tier": tier, "idx": n,
                               "reasoning": f"reasoning {n} " + MARKUP, "answer": f"answer {n} " + MARKUP,
                               "backend": "offline", "offline": True})
            s.set_judge_scores(tid, {d: round(((n * 7 + j * 3) % 10) / 10, 2) for j, d in enumerate(DIMENSIONS)},
                               "heuristic", None, False, w)
        if with_metrics:
            rows = []
            for step in range(1, 41):
                rows.append(("grpo", step, "reward", 0.3 + step * 0.005, T0))
                rows.append(("grpo", step, "loss", 1.0 / step, T0))
                rows.append(("grpo", step, "kl", step * 1e-4, T0))
                for j, d in enumerate(DIMENSIONS):
                    rows.append(("grpo", step, f"rewards/{d}/mean", 0.1 * (j % 5) + step * 0.002, T0))
            s.add_metric_rows(rows)
            s._conn.execute("UPDATE logs SET time = ?", (T0,))
        s.log("sft", "example failure " + MARKUP, "error")
    return run_dir


def text_of(widget) -> str:
    """What a Static shows, as plain text."""
    from rich.text import Text

    content = widget.render()
    return content.plain if isinstance(content, Text) else str(content)


async def wait_for(pilot, cond, timeout: float = 30.0) -> None:
    """Let the app run until cond() holds; fail after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause(0.1)
        if cond():
            return
    raise AssertionError("condition not met in time")
