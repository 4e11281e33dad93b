"""Small helpers shared by the benchmarks (each benchmark prints its figures)."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def add_demo_prompts(store) -> int:
    """The run's own prompts, as datagen leaves them: the shipped demo traces' distinct prompts, in file order. A run
    whose judge is not offline may not fall back to the demo data, so every bench run holds its prompts."""
    import json

    from engine.tracefile import DEMO_TRACES, load_trace_file

    seen: set[str] = set()
    for row in load_trace_file(DEMO_TRACES):
        key = json.dumps(row["turns"])
        if key not in seen:
            seen.add(key)
            store.add_prompt(f"bench-{len(seen):03d}", row["category"], row["turns"], "bench")
    return len(seen)


def demo_grpo_context(tmp: Path, edit=None):
    """(cfg, StageContext, base model path) for the demo's grpo stage in a fresh run folder holding its own prompts;
    `edit(cfg)` first."""
    from engine import config
    from engine.config import STAGES
    from engine.context import StageContext
    from engine.store import RunStore
    from engine.models import loading as models

    cfg = config.load(ROOT / "data" / "configs" / "demo.toml")
    cfg.run.checkpoint_steps = 10_000
    if edit is not None:
        edit(cfg)
    run_dir = tmp / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(cfg, run_dir / "config.toml")
    store = RunStore(run_dir / "run.db", create=True)
    store.init_run("bench", "bench", "demo", STAGES, ["grpo"])
    add_demo_prompts(store)
    store.start_attempt("grpo", 0)
    return cfg, StageContext(name="grpo", run_dir=run_dir, cfg=cfg, store=store), models.base_path(cfg, run_dir)
