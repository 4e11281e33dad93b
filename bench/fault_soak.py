"""Fault soak: random faults (kill -9 of the driver or the worker, a full disk, a read-only database, a damaged
page) across real demo runs (datagen, judge, SFT and GRPO on the tiny model, offline backends) and their resumes.
After every fault: the database is whole, no (stage, step, key) has a row twice, no command printed a traceback,
every edit that was reported saved is stored, and the run finishes once resumed. Prints violations over faults.

    python bench/fault_soak.py [--faults 500] [--seed 0]      # as root: the runs live on a small tmpfs
    python bench/fault_soak.py --quick                         # 10 faults (make test runs this)
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _util  # noqa: F401 - puts the repository on sys.path

ROOT = Path(__file__).resolve().parent.parent
FAULTS = ("kill_worker", "kill_driver", "full_disk", "read_only", "damaged_page")
STAGES = "datagen,judge,sft,grpo"
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


class Soak:
    def __init__(self, root: Path, rng: random.Random, disk: Path | None):
        self.root, self.rng, self.disk = root, rng, disk
        self.runs = (disk or root) / "runs"
        self.runs.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ, **ENV, ABA_RUNS_DIR=str(self.runs), PYTHONPATH=str(ROOT))
        self.env.setdefault("ABA_CACHE_DIR", str(root / "cache"))
        self.violations: list[str] = []
        self.faults = 0
        self.saved_edits: dict[str, list[tuple[int, str, float]]] = {}  # run -> edits reported as committed
        self.config = self._config()

    def _config(self) -> Path:
        from engine import config

        cfg = config.load(ROOT / "data" / "configs" / "demo.toml")
        cfg.datagen.max_prompts = 6
        cfg.sft.max_steps, cfg.sft.per_device_train_batch_size, cfg.sft.min_score = 3, 2, 0.3
        cfg.grpo.max_steps, cfg.grpo.num_generations, cfg.grpo.per_device_train_batch_size = 4, 2, 2
        cfg.grpo.gradient_accumulation_steps, cfg.grpo.max_completion_length, cfg.grpo.sample_every = 1, 16, 1
        cfg.run.checkpoint_steps = 1
        path = self.root / "soak.toml"
        config.save(cfg, path)
        return path

    # -- commands, each checked for a traceback ---------------------------------------------------------------

    def aba(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True,
                              cwd=ROOT, env=self.env, timeout=timeout)
        if "Traceback" in proc.stderr:
            self.violations.append(f"traceback from `aba {' '.join(args)}`: {proc.stderr.strip().splitlines()[-1]}")
        return proc

    def new_run(self) -> Path:
        from engine.runner import supervisor as sup

        proc = self.aba("run", str(self.config), "--stages", STAGES, "--detach")
        if proc.returncode:
            raise RuntimeError(f"aba run failed: {proc.stderr.strip()}")
        return sup.resolve_run(proc.stdout.split()[1], self.runs)

    # -- the faults -------------------------------------------------------------------------------------------

    def running(self, run: Path):
        from engine.store import RunStore

        with RunStore(run / "run.db", readonly=True) as s:
            info = s.run_info()
            stage = next((r for r in s.stages() if r.status == "running"), None)
        return info.get("driver_pid"), stage

    def fault(self, run: Path, kind: str) -> None:
        from engine.runner.procs import pid_alive

        self.faults += 1
        driver, stage = self.running(run)
        if kind in ("kill_worker", "kill_driver"):
            pids = [stage.pid] if stage and stage.pid else []
            if kind == "kill_driver" and driver:
                pids.append(driver)
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 30
            while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
                time.sleep(0.1)
        elif kind == "full_disk" and self.disk is not None:
            filler = self.disk / "filler.bin"
            with open(filler, "ab") as f:
                try:
                    while True:
                        f.write(b"\1" * (1 << 20))
                        f.flush()
                except OSError:
                    pass
            time.sleep(self.rng.uniform(0.5, 3))
            self.status(run)  # readers keep reading while the disk is full
            self.wait(run, timeout=120)  # the stage stops (or finishes) with the disk full
            self.status(run)
            filler.unlink()
        elif kind == "read_only" and self.disk is not None:
            self.stop(run)
            if subprocess.run(["mount", "-o", "remount,ro", str(self.disk)], capture_output=True).returncode == 0:
                try:
                    self.status(run)
                    self.edit(run, expect_saved=False)
                    proc = self.aba("resume", run.name, "--detach")
                    if proc.returncode == 0:
                        self.violations.append(f"{run.name}: resume on a read-only disk said it started")
                finally:
                    subprocess.run(["mount", "-o", "remount,rw", str(self.disk)], capture_output=True)
        elif kind == "damaged_page":
            self.stop(run)
            copy = self.root / "damaged" / run.name
            copy.mkdir(parents=True, exist_ok=True)
            shutil.copy2(run / "run.db", copy / "run.db")
            for name in ("config.toml",):
                shutil.copy2(run / name, copy / name)
            size = (copy / "run.db").stat().st_size // 4096
            with open(copy / "run.db", "r+b") as f:
                f.seek(self.rng.randrange(1, max(size, 2)) * 4096)
                f.write(bytes(self.rng.randrange(256) for _ in range(4096)))
            check = self.aba("check", str(copy))
            status = self.aba("status", str(copy))
            if check.returncode == 0 and status.returncode == 0:
                pass  # the page hit held no live data (a free page): nothing to find
            elif check.returncode == 0:
                self.violations.append(f"{run.name}: `aba status` failed on a copy `aba check` calls whole")
            elif len(status.stderr.strip().splitlines()) != 1:
                self.violations.append(f"{run.name}: a damaged copy gave not one line: {status.stderr[-300:]}")
            else:
                self.aba("check", "--repair", str(copy))
            shutil.rmtree(copy, ignore_errors=True)
        self.check(run, after=kind)

    def stop(self, run: Path) -> None:
        self.aba("cancel", run.name, "--grace", "0")  # noqa - a stop as the user makes it
        self.wait(run, timeout=60)

    def status(self, run: Path) -> None:
        proc = self.aba("status", run.name)
        if proc.returncode not in (0,):
            self.violations.append(f"{run.name}: `aba status` exit {proc.returncode}: {proc.stderr.strip()[-200:]}")

    def wait(self, run: Path, timeout: float) -> None:
        from engine.runner import supervisor as sup

        try:
            sup.wait(run, timeout_s=timeout)
        except (sqlite3.Error, OSError):
            pass

    def edit(self, run: Path, expect_saved: bool = True) -> None:
        """An edit the way the panel's writer makes it; one reported saved is remembered for the final check."""
        from engine.store import RunStore, open_for_edits

        try:
            store, readonly = open_for_edits(run / "run.db")
        except Exception as err:  # noqa: BLE001
            self.violations.append(f"{run.name}: the edit path could not open the run ({err})")
            return
        with store:
            ids = [t for t in store.filtered_trace_ids()] if store.trace_count() else []
            if not ids:
                return
            tid = self.rng.choice(ids)
            value = round(self.rng.uniform(0, 1), 2)
            try:
                if readonly:
                    raise PermissionError(readonly)
                changed = store.edit_score(tid, "helpfulness", value)
            except (sqlite3.Error, OSError, PermissionError):
                return  # refused and said: not shown as saved
            if changed:
                self.saved_edits.setdefault(run.name, []).append((tid, "helpfulness", value))
        if not expect_saved and changed:
            self.violations.append(f"{run.name}: an edit on a read-only run was stored")

    # -- the checks -------------------------------------------------------------------------------------------

    def check(self, run: Path, after: str) -> None:
        db = run / "run.db"
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
            ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
            twice = conn.execute(
                "SELECT stage, step, key, COUNT(*), COUNT(DISTINCT attempt) FROM metrics GROUP BY stage, step, key"
                " HAVING COUNT(DISTINCT attempt) > 1 OR (COUNT(*) > 1 AND key NOT LIKE 'vram/%') LIMIT 3").fetchall()
            samples = conn.execute("SELECT stage, step, COUNT(DISTINCT attempt) FROM samples GROUP BY stage, step"
                                   " HAVING COUNT(DISTINCT attempt) > 1 LIMIT 3").fetchall()
            conn.close()
        except sqlite3.Error as err:
            self.violations.append(f"{run.name} after {after}: database unreadable ({err})")
            return
        if ok != "ok":
            self.violations.append(f"{run.name} after {after}: integrity_check: {ok}")
        if twice:
            self.violations.append(f"{run.name} after {after}: rows twice per (stage, step, key): {twice}")
        if samples:
            self.violations.append(f"{run.name} after {after}: samples of two attempts for one step: {samples}")
        driver_log = run / "driver.log"
        if driver_log.exists() and "Traceback" in driver_log.read_text(errors="replace"):
            self.violations.append(f"{run.name} after {after}: traceback in driver.log")

    def done(self, run: Path) -> bool:
        from engine.store import RunStore

        with RunStore(run / "run.db", readonly=True) as s:
            return all(r.status == "succeeded" for r in s.stages() if r.selected)

    def finish(self, run: Path) -> None:
        """Resume until every stage succeeded (a fault may have stopped it), then check the edits."""
        from engine.store import RunStore

        for _ in range(6):
            self.wait(run, timeout=900)
            with RunStore(run / "run.db", readonly=True) as s:
                left = [r for r in s.stages() if r.selected and r.status != "succeeded"]
            if not left:
                break
            self.aba("resume", run.name, "--detach")
        else:
            self.violations.append(f"{run.name}: not finished after 6 resumes: {[(r.name, r.reason) for r in left]}")
        with RunStore(run / "run.db", readonly=True) as s:
            for tid, dim, value in self.saved_edits.get(run.name, []):
                if not any(e["trace_id"] == tid and e["dim"] == dim and e["new"] == value for e in s.score_edits()):
                    self.violations.append(f"{run.name}: an edit reported saved is not stored (trace {tid})")
        self.check(run, after="finish")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="10 faults")
    parser.add_argument("--per-run", type=int, default=5, help="faults per run at most before the next run starts")
    args = parser.parse_args()
    total = 10 if args.quick else args.faults
    rng = random.Random(args.seed)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="aba-fault-soak-") as tmp:
        root = Path(tmp)
        disk = root / "disk"
        disk.mkdir()
        mounted = os.geteuid() == 0 and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=160m", "tmpfs", str(disk)], capture_output=True).returncode == 0
        kinds = FAULTS if mounted else ("kill_worker", "kill_driver", "damaged_page")
        soak = Soak(root, rng, disk if mounted else None)
        try:
            from tests.test_reproducibility import prebuild_demo_base

            os.environ["ABA_CACHE_DIR"] = soak.env["ABA_CACHE_DIR"]
            prebuild_demo_base(root, 3407)
            run = None
            while soak.faults < total:
                if run is None or soak.faults % args.per_run == 0 or soak.done(run):
                    if run is not None:
                        soak.finish(run)
                    run = soak.new_run()
                time.sleep(rng.uniform(0.5, 6))
                soak.edit(run)
                soak.fault(run, rng.choice(kinds))
                soak.aba("resume", run.name, "--detach")
                if soak.faults % 10 == 0:
                    print(f"  ... {soak.faults} faults, {len(soak.violations)} violations", flush=True)
            if run is not None:
                soak.finish(run)
        finally:
            if mounted:
                subprocess.run(["umount", "-l", str(disk)], capture_output=True)
    took = time.monotonic() - t0
    for v in soak.violations[:20]:
        print("VIOLATION:", v)
    print(f"fault soak: {len(soak.violations)} violations over {soak.faults} faults ({', '.join(kinds)};"
          f" {took:.0f} s, load {os.getloadavg()[0]:.1f})")
    return 1 if soak.violations else 0


if __name__ == "__main__":
    sys.exit(main())
