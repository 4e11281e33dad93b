"""A seeded random driver of real detached runs, checking the run lifecycle's invariants after every step.

Each sequence is one run of two fast test stages (tests/stages/busy.py behind `datagen` and `judge`): it is
launched, then random steps interleave cancel (of the run or one stage), skip, resume, start, kill -9 of a worker,
kill -9 of the driver, `aba status --json` subprocesses and an in-process reader polling through the read-only
store, with short random pauses, and finally it is left to settle. Used by tests/test_lifecycle_random.py and
bench/lifecycle_soak.py; a failing sequence is replayed with its seed.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import UserError
from engine.runner import supervisor as sup
from engine.runner.procs import same_process
from engine.store import FINAL, STATUSES, RunStore

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("datagen", "judge")
STAGE_MODULES = ",".join(f"{s}=tests.stages.busy" for s in STAGES)
CONFIG = '[run]\nstages = ["datagen", "judge"]\ncancel_grace_s = 1\n'
ACTIONS = {  # weights
    "cancel_run": 2, "cancel_stage": 2, "skip": 3, "resume": 3, "start_stage": 1, "kill_worker": 2,
    "kill_driver": 2, "status_reader": 1, "pause": 2, "wait_running": 3, "wait_idle": 2,
}
SPAWN_LINE = re.compile(r"^attempt (\d+) of (\S+): worker pid (\d+)$", re.M)


@dataclass
class Outcome:
    sequences: int = 0
    steps: int = 0
    violations: list[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    def add(self, other: Outcome) -> None:
        self.sequences += other.sequences
        self.steps += other.steps
        self.violations += other.violations
        self.counts.update(other.counts)


def environment() -> dict[str, str]:
    """What the test process's environment needs so that every driver and worker it starts runs the busy stage."""
    path = os.environ.get("PYTHONPATH", "")
    if str(ROOT) not in path.split(os.pathsep):
        path = os.pathsep.join(filter(None, [str(ROOT), path]))
    return {"ABA_STAGE_MODULES": STAGE_MODULES, "PYTHONPATH": path}


class Checker:
    """The invariants, between observations as well as within each one."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.final: dict[str, tuple[str, int, float | None]] = {}  # stage -> (status, attempts, heartbeat) last seen final
        self.ended: dict[tuple[str, int], str] = {}  # (stage, n) -> the final status its attempt row was seen with
        self.allowed: dict[str, set[str]] = {}  # stage -> what user actions since the last check allow: skip, reset

    def allow(self, stage: str, kind: str) -> None:
        self.allowed.setdefault(stage, set()).add(kind)

    def check(self) -> list[str]:
        starts = {s: self._starts(s) for s in STAGES}  # before the snapshot: a start implies its attempt row
        uri = (self.run_dir / "run.db").resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
        try:
            conn.execute("BEGIN")  # one snapshot for every table
            stages = {r[0]: r for r in conn.execute(
                "SELECT s.name, s.status, s.attempts, s.pid, s.pid_started, s.ended, h.time"
                " FROM stages s LEFT JOIN heartbeats h ON h.stage = s.name")}
            rows = conn.execute("SELECT stage, n, pid, status FROM attempts ORDER BY id").fetchall()
            integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
            conn.execute("COMMIT")
        finally:
            conn.close()
        spawned = {(m[2], int(m[1]), int(m[3])) for m in SPAWN_LINE.finditer(self._read(self.run_dir / "driver.log"))}
        bad = [] if integrity == "ok" else [f"integrity_check: {integrity}"]
        for name in STAGES:
            bad += self._stage(name, stages[name], [r for r in rows if r[0] == name], starts[name], spawned)
        self.allowed.clear()
        return bad

    def _stage(self, name, row, attempts, starts, spawned) -> list[str]:
        _, status, k, pid, pid_started, ended, beat = row
        bad = []
        if status not in STATUSES:
            bad.append(f"{name}: unknown status {status!r}")
        # Exactly one state: the stage row and its attempt rows agree.
        if [a[1] for a in attempts] != list(range(1, k + 1)):
            bad.append(f"{name}: attempt rows {[a[1] for a in attempts]} for attempts={k}")
        running = [a for a in attempts if a[3] == "running"]
        if status == "running" and (not running or running[-1][1] != k or running[-1][2] != pid or pid_started is None):
            bad.append(f"{name}: running, but its attempt rows say {attempts}")
        if status != "running" and running:
            bad.append(f"{name}: {status}, but attempt {running[0][1]} is still running")
        for a in attempts:
            if a[3] not in ("running", "succeeded", "failed", "crashed", "cancelled"):
                bad.append(f"{name}: attempt {a[1]} has status {a[3]!r}")
            if a[3] != "running":
                was = self.ended.setdefault((name, a[1]), a[3])
                if was != a[3]:  # e.g. cancelled, then succeeded
                    bad.append(f"{name}: attempt {a[1]} ended {was}, later reads {a[3]}")
        # Attempts in the table = worker processes started: each row is a worker the driver spawned, each worker
        # that ran the stage had its own row, and none ran twice.
        for a in attempts:
            if (name, a[1], a[2]) not in spawned:
                bad.append(f"{name}: attempt {a[1]} (pid {a[2]}) was never spawned by a driver")
        ns = [n for n, _ in starts]
        if len(ns) != len(set(ns)):
            bad.append(f"{name}: one attempt ran the stage twice: {starts}")
        for n, p in starts:
            if not any(a[1] == n and a[2] == p for a in attempts):
                bad.append(f"{name}: a worker (pid {p}) ran the stage as attempt {n} without its own attempt row")
        # A final stage stays as it is (no start after cancel or skip, no succeeded after cancelled) unless the
        # user skipped, resumed or started it since; its attempt writes no heartbeat after its end.
        if status in FINAL and ended is not None and beat is not None and beat > ended:
            bad.append(f"{name}: heartbeat at {beat:.3f} after it ended ({status}) at {ended:.3f}")
        seen = self.final.get(name)
        allowed = self.allowed.get(name, set())
        if seen is not None and (status, k) != seen[:2]:
            ok = "reset" in allowed or ("skip" in allowed and status == "skipped" and k == seen[1])
            if not ok:
                bad.append(f"{name}: was {seen[0]} (attempts {seen[1]}), now {status} (attempts {k}) with no resume")
        elif seen is not None and beat != seen[2]:
            bad.append(f"{name}: heartbeat moved while {status}")
        if status in FINAL:
            self.final[name] = (status, k, beat)
        else:
            self.final.pop(name, None)
        return bad

    def _starts(self, stage: str) -> list[tuple[int, int]]:
        text = self._read(self.run_dir / stage / "starts.txt")
        return [(int(a), int(b)) for a, b in (ln.split() for ln in text.splitlines() if ln.strip())]

    @staticmethod
    def _read(path: Path) -> str:
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""


class Sequence:
    """One run driven through random steps."""

    def __init__(self, root: Path, seed: int):
        self.rng = random.Random(seed)
        self.seed = seed
        cfg = root / f"c{seed}.toml"
        cfg.write_text(CONFIG, encoding="utf-8")
        self.run_dir = sup.create_run(cfg, root)
        busy = {"steps": self.rng.randint(3, 25), "delay": self.rng.choice([0.005, 0.01, 0.02]),
                "ignore_cancel": self.rng.random() < 0.2}
        (self.run_dir / "busy.json").write_text(json.dumps(busy))
        self.checker = Checker(self.run_dir)
        self.out = Outcome(sequences=1)
        self.readers: list[subprocess.Popen] = []
        self.log: list[str] = [f"busy {busy}"]
        self._stop = threading.Event()

    def run(self, steps: int) -> Outcome:
        reader = threading.Thread(target=self._poll, daemon=True)
        reader.start()
        try:
            self._step("launch", lambda: sup.launch(self.run_dir))
            for _ in range(steps):
                action = self.rng.choices(list(ACTIONS), weights=list(ACTIONS.values()))[0]
                self._step(action, getattr(self, f"_{action}"))
            self._settle()
        finally:
            self._stop.set()
            reader.join(10)
            for proc in self.readers:
                self._reap_reader(proc)
        return self.out

    def _step(self, name: str, action) -> None:
        self.out.steps += 1
        try:
            result = action()
            self.out.counts[name] += 1
        except UserError as err:  # a refusal is a legitimate answer (e.g. resume while a stage runs)
            result = None
            self.out.counts[f"{name} refused"] += 1
            self.log.append(f"{name}: refused: {err}")
        else:
            self.log.append(f"{name}: {result}")
        for v in self.checker.check():
            self._violation(f"after {name}: {v}")

    def _violation(self, text: str) -> None:
        self.out.violations.append(f"seed {self.seed}, run {self.run_dir.name}: {text}\n    steps: " + " ; ".join(self.log))

    # -- actions --------------------------------------------------------------------------------

    def _cancel_run(self):
        return self._cancel(None)

    def _cancel_stage(self):
        return self._cancel(self.rng.choice(STAGES))

    def _cancel(self, stage):
        names = sup.cancel(self.run_dir, stage, grace_s=self.rng.choice([0.3, 0.6]))
        with RunStore(self.run_dir / "run.db", readonly=True) as store:
            for name in names:
                row = store.stage(name)
                if row.status in ("pending", "running"):
                    self._violation(f"cancel returned with {name} still {row.status}")
                if row.status == "cancelled" and row.attempts:
                    self.out.counts["cancelled after a start"] += 1
        return names

    def _skip(self):
        stage = self.rng.choice(STAGES)
        sup.skip(self.run_dir, stage)
        self.checker.allow(stage, "skip")  # only a skip that was accepted may change a final status
        with RunStore(self.run_dir / "run.db", readonly=True) as store:
            if sup.run_driven(store):
                self.out.counts["skips while the run was driven"] += 1
        return stage

    def _resume(self):
        pid = sup.resume(self.run_dir)
        for stage in STAGES:
            self.checker.allow(stage, "reset")
        return pid

    def _start_stage(self):
        stage = self.rng.choice(STAGES)
        pid = sup.start_stage(self.run_dir, stage)
        self.checker.allow(stage, "reset")
        return pid

    def _kill_worker(self):
        with RunStore(self.run_dir / "run.db", readonly=True) as store:
            running = [r for r in store.stages() if r.status == "running"]
        for row in running:
            if same_process(row.pid, row.pid_started):  # never a stranger that got the pid
                self._kill(row.pid)
                self.out.counts["workers killed"] += 1
                return row.name
        return None

    def _kill_driver(self):
        with RunStore(self.run_dir / "run.db", readonly=True) as store:
            info = store.run_info()
        if same_process(info.get("driver_pid"), info.get("driver_started")):
            self._kill(info["driver_pid"])
            self.out.counts["drivers killed"] += 1
            return info["driver_pid"]
        return None

    def _kill(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass

    def _status_reader(self):
        env = dict(os.environ, **environment())
        self.readers.append(subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "status", str(self.run_dir), "--json"], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))

    def _pause(self):
        time.sleep(self.rng.choice([0.0, 0.05, 0.2, 0.5]))

    def _wait_running(self):
        """Until some stage runs (most races are between a running stage and the user)."""
        return self._wait_until(lambda rows, driven: any(r.status == "running" for r in rows), 2.0)

    def _wait_idle(self):
        """Until the driver is gone and nothing runs (so that resume and start have something to do)."""
        return self._wait_until(lambda rows, driven: not driven and not any(r.status == "running" for r in rows), 5.0)

    def _wait_until(self, done, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with RunStore(self.run_dir / "run.db", readonly=True) as store:
            while time.monotonic() < deadline:
                if done(store.stages(), sup.run_driven(store)):
                    return True
                time.sleep(0.02)
        return False

    # -- background and the end -----------------------------------------------------------------

    def _poll(self) -> None:
        """A concurrent reader like the panel: read-only store, crashes marked through the named path."""
        try:
            with RunStore(self.run_dir / "run.db", readonly=True) as store:
                while not self._stop.is_set():
                    sup.notice_crashes(store)
                    store.run_info()
                    self._stop.wait(0.05)
        except Exception as err:  # noqa: BLE001 - any error of a reader is a finding
            self._violation(f"reader: {type(err).__name__}: {err}")

    def _reap_reader(self, proc: subprocess.Popen) -> None:
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            self._violation("`aba status` hung")
            return
        if proc.returncode != 0:
            self._violation(f"`aba status` exit {proc.returncode}: {err.strip()[-300:]}")
            return
        statuses = {s["status"] for s in json.loads(out)["stages"]}
        if not statuses <= set(STATUSES):
            self._violation(f"`aba status` read {statuses}")

    def _settle(self, timeout: float = 40.0) -> None:
        """Let whatever still runs finish; then nothing may run, and every worker of the run must be gone."""
        deadline = time.monotonic() + timeout
        with RunStore(self.run_dir / "run.db", readonly=True) as store:
            while time.monotonic() < deadline:
                rows = sup.notice_crashes(store)
                if not any(r.status == "running" for r in rows) and not sup.run_driven(store):
                    break
                time.sleep(0.05)
            else:
                self._violation(f"never settled: {[(r.name, r.status) for r in rows]}")
            attempts = store.attempts()
        for v in self.checker.check():
            self._violation(f"at the end: {v}")
        gone_by = time.monotonic() + 10
        live = attempts
        while live and time.monotonic() < gone_by:
            live = [a for a in live if same_process(a["pid"], a["pid_started"])]
            time.sleep(0.05)
        if live:
            self._violation(f"workers still alive after the run settled: {[(a['stage'], a['pid']) for a in live]}")
        logs = " ".join(Checker._read(self.run_dir / s / "worker.log") for s in STAGES)
        self.out.counts["orphan workers that stood down"] += logs.count("not this process's to run")
        self.out.counts["attempts"] += len(attempts)


def run_sequences(root: Path, n: int, seed: int = 0, steps: tuple[int, int] = (3, 6), parallel: int = 4,
                  progress=None) -> Outcome:
    """Run `n` sequences (seeds seed..seed+n-1), `parallel` at a time; every process they start sees `environment()`."""
    from concurrent.futures import ThreadPoolExecutor

    missing = {k: v for k, v in environment().items() if os.environ.get(k) != v}
    if missing:
        raise RuntimeError(f"set these in the environment first: {missing}")
    total = Outcome()
    lock = threading.Lock()

    def one(i: int) -> None:
        rng = random.Random(seed + i)
        sequence = Sequence(root, seed + i)
        outcome = sequence.run(rng.randint(*steps))
        if not outcome.violations:  # a clean run is not worth its disk (a soak makes thousands); keep the others
            shutil.rmtree(sequence.run_dir, ignore_errors=True)
        with lock:
            total.add(outcome)
            if progress:
                progress(total)

    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, range(n)))
    return total
