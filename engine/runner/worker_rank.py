"""One rank of a data-parallel stage, started by `accelerate launch` from the stage's worker. Rank 0 reports."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from engine import config as config_mod
from engine.context import StageCancelled, StageContext
from engine.training.distributed import is_primary
from engine.runner.procs import install_stop_handler
from engine.store import RunStore
from engine.registry import stage_module


def main(argv: list[str] | None = None) -> int:
    stage, run_dir = (sys.argv[1:] if argv is None else argv)[:2]
    run_dir = Path(run_dir)
    cfg = config_mod.load(run_dir / "config.toml")
    store = RunStore(run_dir / "run.db")
    ctx = StageContext(name=stage, run_dir=run_dir, cfg=cfg, store=store, primary=is_primary())
    install_stop_handler(ctx.cancel_event.set)
    print(f"[{stage}] rank {os.environ.get('RANK', '0')} of {os.environ.get('WORLD_SIZE', '1')} started", flush=True)
    try:
        stage_module(stage).run(ctx)
    except StageCancelled:
        pass
    finally:
        store.close()
        _leave_process_group()
    return 0


def _leave_process_group() -> None:
    """Wait for every rank (rank 0 may still be saving), then tear the group down cleanly: a rank that exits with
    gloo threads alive aborts, and the launcher then kills the others."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
