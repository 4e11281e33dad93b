"""The run queue: queued runs start one at a time per GPU (one at a time on a CPU), in order, unattended.

State is `RUNS/queue.json`, replaced atomically under a file lock (filelock), so it survives a closed panel, a killed
driver and a reboot. The driver (`python -m engine.sweep.queue RUNS`) is a detached process like a run's own
driver; any `aba` command or panel start that finds queued work and no live driver starts a new one
(`ensure_driver`). A run that fails does not stop the queue; a run cut off by a reboot (its driver gone, a stage
left running) is resumed once from its checkpoints.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from engine.errors import UserError

QUEUE_FILE = "queue.json"
LOCK_FILE = "queue.lock"
POLL_S = 1.0
ACTIVE = ("queued", "running")


def _paths(root: Path) -> tuple[Path, Path]:
    return root / QUEUE_FILE, root / LOCK_FILE


def _empty() -> dict[str, Any]:
    return {"entries": [], "driver": None}


def read(root: Path) -> dict[str, Any]:
    """The queue as it is now (no lock: the file is only ever replaced whole)."""
    path, _ = _paths(root)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return _empty()
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: cannot read the queue ({err}); move it aside to start an empty one") from None


def _write(root: Path, state: dict[str, Any]) -> None:
    path, _ = _paths(root)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(state, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextmanager
def locked(root: Path) -> Iterator[dict[str, Any]]:
    """Read-modify-write of the queue under the lock; the change is written when the block ends without error."""
    from filelock import FileLock

    root.mkdir(parents=True, exist_ok=True)
    _, lock = _paths(root)
    with FileLock(str(lock), timeout=30):
        state = read(root)
        yield state
        _write(root, state)


def entries(root: Path, active_only: bool = False) -> list[dict[str, Any]]:
    rows = read(root)["entries"]
    return [e for e in rows if e["state"] in ACTIVE] if active_only else rows


def positions(root: Path) -> dict[str, str]:
    """Per run id, where it stands in the queue: `running`, `#1`, `#2`, ... (the Runs screen's column)."""
    out, n = {}, 0
    try:
        rows = entries(root, active_only=True)
    except UserError:
        return {}
    for e in rows:
        if e["state"] == "running":
            out[e["run"]] = "running" + (f" gpu{e['gpu']}" if e.get("gpu") is not None else "")
    for e in rows:
        if e["state"] == "queued":
            n += 1
            out[e["run"]] = f"queued #{n}"
    return out


def add(root: Path, run_ids: list[str], *, resume: bool = False) -> list[str]:
    """Append runs to the queue (a run already queued or running is left where it is)."""
    added = []
    with locked(root) as state:
        active = {e["run"] for e in state["entries"] if e["state"] in ACTIVE}
        for rid in run_ids:
            if rid in active:
                continue
            state["entries"].append({"run": rid, "state": "queued", "added": time.time(), "resume": resume,
                                     "gpu": None, "started": None, "ended": None, "result": None, "retries": 0})
            added.append(rid)
    return added


def cancel(root: Path, run_id: str) -> str:
    """Take a queued run out of the queue; a running one is cancelled like `aba cancel` (the queue goes on)."""
    with locked(root) as state:
        entry = _find(state, run_id)
        was = entry["state"]
        if was == "queued":
            entry.update(state="cancelled", ended=time.time(), result="cancelled before it started")
    if was == "running":
        from engine.runner import supervisor as sup

        sup.cancel(root / run_id)
    return was


def move(root: Path, run_id: str, position: int) -> int:
    """Put a queued run at `position` (1 = next to start) among the queued runs; returns where it went."""
    with locked(root) as state:
        entry = _find(state, run_id)
        if entry["state"] != "queued":
            raise UserError(f"run {run_id} is {entry['state']}, not queued; only queued runs move")
        queued = [e for e in state["entries"] if e["state"] == "queued" and e is not entry]
        position = max(1, min(position, len(queued) + 1))
        queued.insert(position - 1, entry)
        rest = [e for e in state["entries"] if e["state"] != "queued"]
        state["entries"] = rest + queued
    return position


def _find(state: dict[str, Any], run_id: str) -> dict[str, Any]:
    active = [e for e in state["entries"] if e["state"] in ACTIVE and e["run"].startswith(run_id)]
    if not active:
        raise UserError(f"run {run_id} is not in the queue (see `aba queue`)")
    exact = [e for e in active if e["run"] == run_id]
    if len(active) > 1 and not exact:
        raise UserError(f"run id {run_id!r} is ambiguous in the queue: {', '.join(e['run'] for e in active[:5])}")
    return exact[0] if exact else active[0]


# -- the driver ---------------------------------------------------------------------------------------------------


def gpu_slots() -> list[str | None]:
    """One slot per visible GPU (its CUDA_VISIBLE_DEVICES value), or one CPU slot. NVML, not torch: the driver
    stays light. CUDA_VISIBLE_DEVICES, when set, limits the GPUs the queue hands out."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v.strip() for v in visible.split(",") if v.strip() and v.strip() != "-1"]
        return list(ids) or [None]
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            n = pynvml.nvmlDeviceGetCount()
        finally:
            pynvml.nvmlShutdown()
        return [str(i) for i in range(n)] or [None]
    except Exception:  # no NVML library or no NVIDIA driver: a CPU machine
        return [None]


def driver_alive(state: dict[str, Any]) -> bool:
    from engine.runner.procs import same_process

    d = state.get("driver")
    return bool(d) and same_process(d.get("pid"), d.get("started")) is not False


def ensure_driver(root: Path) -> int | None:
    """Start the queue driver when there is queued or running work and none is alive; returns its pid (or None)."""
    path, _ = _paths(root)
    if not path.exists():
        return None
    try:
        state = read(root)
    except UserError:
        return None
    if not any(e["state"] in ACTIVE for e in state["entries"]) or driver_alive(state):
        return None
    from engine.runner.procs import spawn_detached
    from engine.runner.supervisor import _python_env, ROOT

    proc = spawn_detached([sys.executable, "-m", "engine.sweep.queue", str(root)], root / "queue.log",
                          env=_python_env(), cwd=ROOT)
    return proc.pid


def _run_done(root: Path, run_id: str) -> tuple[bool, str]:
    """(finished, state) of a run the queue started: finished once its driver is gone and no stage runs."""
    from engine.runner import supervisor as sup
    from engine.store import RunStore

    run_dir = root / run_id
    if not (run_dir / "run.db").exists():
        return True, "missing"
    with RunStore(run_dir / "run.db") as store:
        rows = sup.notice_crashes(store)
        driven = sup.run_driven(store)
    if driven or any(r.status == "running" for r in rows):
        return False, "running"
    return True, sup.run_state(rows)


def _start(root: Path, entry: dict[str, Any], slot: str | None) -> None:
    from engine.runner import supervisor as sup

    run_dir = root / entry["run"]
    old = os.environ.get("CUDA_VISIBLE_DEVICES")
    if slot is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = slot  # the run's driver and its workers see only this GPU
    try:
        if entry.get("resume"):
            sup.resume(run_dir)
        else:
            sup.launch(run_dir)
    finally:
        if slot is not None:
            if old is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = old


def drive(root: Path, poll_s: float = POLL_S) -> int:
    """Start queued runs as slots free up until nothing is queued or running. One driver per runs folder."""
    from engine.runner.procs import process_started

    me = os.getpid()
    with locked(root) as state:
        if driver_alive(state) and state["driver"]["pid"] != me:
            print(f"another queue driver (pid {state['driver']['pid']}) is alive; leaving the queue to it", flush=True)
            return 4
        state["driver"] = {"pid": me, "started": process_started(me)}
        fresh = True
    slots = gpu_slots()
    print(f"queue driver pid {me}: slots {', '.join(s or 'cpu' for s in slots)}", flush=True)
    try:
        while True:
            with locked(root) as state:
                busy = set()
                for e in state["entries"]:
                    if e["state"] != "running":
                        continue
                    done, how = _run_done(root, e["run"])
                    if not done:
                        busy.add(e.get("gpu"))
                        continue
                    interrupted = fresh and how in ("crashed", "pending") and e.get("retries", 0) < 1
                    if interrupted:  # its driver died with the last queue driver (a reboot): go again from checkpoints
                        e.update(state="queued", resume=True, retries=e.get("retries", 0) + 1, gpu=None)
                        print(f"{e['run']}: interrupted ({how}); queued again to resume", flush=True)
                        continue
                    e.update(state={"succeeded": "done", "cancelled": "cancelled"}.get(how, "failed"), ended=time.time(), result=how)
                    print(f"{e['run']}: {how}", flush=True)
                fresh = False
                free = [s for s in slots if s not in busy]
                for e in state["entries"]:
                    if not free:
                        break
                    if e["state"] != "queued":
                        continue
                    slot = free.pop(0)
                    try:
                        _start(root, e, slot)
                    except UserError as err:  # e.g. the run folder was removed: the queue goes on
                        e.update(state="failed", ended=time.time(), result=str(err))
                        print(f"{e['run']}: not started: {err}", flush=True)
                        free.insert(0, slot)
                        continue
                    e.update(state="running", gpu=slot, started=time.time())
                    print(f"{e['run']}: started on {slot or 'cpu'}", flush=True)
                if not any(x["state"] in ACTIVE for x in state["entries"]):
                    state["driver"] = None
                    print("queue empty; driver exits", flush=True)
                    return 0
            time.sleep(poll_s)
    except BaseException:
        with locked(root) as state:
            if state.get("driver") and state["driver"]["pid"] == me:
                state["driver"] = None
        raise


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m engine.sweep.queue", description="Drive the run queue of a runs folder.")
    p.add_argument("runs_dir")
    args = p.parse_args(argv)
    return drive(Path(args.runs_dir).resolve())


if __name__ == "__main__":
    sys.exit(main())
