"""Data-parallel training: with train.num_processes > 1 the stage's worker relaunches it through `accelerate launch`.

The ranks run in the worker's own process group, so cancel and the hard kill reach them. Rank 0 writes to the run
database; the other ranks train silently. On CPU the ranks talk over gloo (accelerate's MULTI_CPU), on GPUs NCCL.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from engine.context import StageCancelled, StageContext, StageFailed

ROOT = Path(__file__).resolve().parents[2]


def in_rank() -> bool:
    return "LOCAL_RANK" in os.environ


def is_primary() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def should_launch(ctx: StageContext) -> bool:
    return ctx.cfg.train.num_processes > 1 and not in_rank()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_ranks(ctx: StageContext) -> None:
    """Run this stage in N processes and wait; the worker keeps its heartbeat meanwhile."""
    import torch

    n = ctx.cfg.train.num_processes
    cpu = ctx.cfg.train.device == "cpu" or not torch.cuda.is_available()
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), "-m", "engine.runner.worker_rank", ctx.name, str(ctx.run_dir)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])))
    if cpu:
        env["ACCELERATE_USE_CPU"] = "true"
        env.setdefault("OMP_NUM_THREADS", "1")
    ctx.event("distributed", f"launching {n} processes through accelerate launch ({'gloo on CPU' if cpu else 'NCCL on GPU'})",
              num_processes=n)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    while proc.poll() is None:
        time.sleep(0.5)
    if ctx.should_stop():
        raise StageCancelled()
    if proc.returncode != 0:
        raise StageFailed(f"{n}-process training exited with code {proc.returncode}; see {ctx.folder / 'worker.log'}")


def all_ranks_stop(flag: bool) -> bool:
    """True on every rank when any rank wants to stop, so all stop at the same step (no rank left waiting)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
