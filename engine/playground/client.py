"""The chat worker seen from the panel or the CLI: spawn it, send commands, receive its events. Light: no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.playground.settings import ChatSettings

ROOT = Path(__file__).resolve().parents[2]
Event = dict[str, Any]


WORKER_NICE = 5  # Unix niceness of a chat worker that yields the CPU (Windows: below-normal priority class)


def lower_priority(pid: int) -> None:
    """Run process `pid` below normal priority; quietly nothing where the platform refuses."""
    try:
        if sys.platform == "win32":
            import psutil

            try:
                psutil.Process(pid).nice(psutil.BELOW_NORMAL_PRIORITY_CLASS)
            except psutil.Error:
                pass  # gone already, or not ours to change
        else:
            os.setpriority(os.PRIO_PROCESS, pid, os.getpriority(os.PRIO_PROCESS, pid) + WORKER_NICE)
    except (OSError, ImportError):
        pass


class ChatClient:
    """One chat worker process for one run. Events arrive on a reader thread and go to `on_event`; when the worker
    ends, whatever the reason, a last {"ev": "exit"} event says so (with its log's last line when it crashed)."""

    def __init__(self, run_dir: Path, on_event: Callable[[Event], None], *, yield_cpu: bool = False):
        """yield_cpu: the worker runs below normal priority (the panel asks for it: its keys must not wait behind
        token generation on a machine with few cores; on an idle machine the worker is as fast)."""
        self.run_dir = Path(run_dir)
        self.on_event = on_event
        folder = self.run_dir / "playground"
        folder.mkdir(exist_ok=True)
        self.log_path = folder / "worker.log"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])),
                   PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
        if yield_cpu:  # and one core: the panel's event loop keeps one to itself while tokens are generated
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            share = str(max(cores - 1, 1))
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # as runner.threads sets them
                env.setdefault(var, share)  # a value the person set is theirs
        extra: dict[str, Any] = {}
        if sys.platform == "win32":
            extra["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            extra["start_new_session"] = True  # a Ctrl-C in the terminal reaches the CLI, which ends the worker
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.playground.worker", str(self.run_dir)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._log, cwd=ROOT, env=env, **extra,
        )
        if yield_cpu:
            lower_priority(self.proc.pid)
        self._send_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="chat-worker-events", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                event = json.loads(raw)
            except json.JSONDecodeError:
                continue  # not ours (the worker routes everything else to its log)
            self.on_event(event)
        code = self.proc.wait()
        self.on_event({"ev": "exit", "code": code, "message": "" if code == 0 else self._last_log_line(code)})

    def _last_log_line(self, code: int) -> str:
        try:
            lines = [ln for ln in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        except OSError:
            lines = []
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        return f"chat worker ended ({how}): {lines[-1][:200] if lines else 'no log'} (log: {self.log_path})"

    def send(self, op: str, **data: Any) -> bool:
        """False when the worker is gone."""
        with self._send_lock:
            if self.proc.stdin is None or self.proc.poll() is not None:
                return False
            try:
                self.proc.stdin.write((json.dumps({"op": op, **data}) + "\n").encode("utf-8"))
                self.proc.stdin.flush()
                return True
            except (BrokenPipeError, OSError, ValueError):
                return False

    def ask(self, prompt: str, models: list[str], settings: ChatSettings, follow_up: bool = False) -> bool:
        return self.send("ask", prompt=prompt, models=models, settings=settings.as_dict(), follow_up=follow_up)

    def cancel(self) -> bool:
        return self.send("cancel")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self, timeout: float = 5.0) -> None:
        """Ask the worker to end, then make sure it has: stdin closed, then terminate, then kill."""
        self.send("cancel")
        self.send("quit")
        with self._send_lock:
            try:
                if self.proc.stdin:
                    self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout)
        self._log.close()


class WorkerGone(Exception):
    """The chat worker ended (its one-line reason is the message)."""


class BlockingChat:
    """The chat worker for a caller that waits (the CLI, tests): events through a queue, one turn at a time."""

    def __init__(self, run_dir: Path, ready_timeout: float = 300.0):
        import queue

        self.events: queue.Queue[Event] = queue.Queue()
        self.client = ChatClient(run_dir, self.events.put)
        self.ready = self._next(ready_timeout, until=("ready",))

    def _next(self, timeout: float, until: tuple[str, ...] = ()) -> Event:
        import queue

        while True:
            try:
                event = self.events.get(timeout=timeout)
            except queue.Empty:
                raise WorkerGone(f"chat worker silent for {timeout:g} s (log: {self.client.log_path})") from None
            if event["ev"] in ("exit", "fatal"):
                raise WorkerGone(event.get("message") or f"chat worker ended (exit code {event.get('code')})")
            if not until or event["ev"] in until:
                return event

    def ask(self, prompt: str, models: list[str], settings: ChatSettings, follow_up: bool = False,
            timeout: float = 600.0):
        """Every event of this question, up to and including its turn_done (a bad command ends it with an error)."""
        if not self.client.ask(prompt, models, settings, follow_up):
            raise WorkerGone(self._next(timeout).get("message", "chat worker gone"))
        while True:
            event = self._next(timeout)
            yield event
            if event["ev"] == "turn_done" or (event["ev"] == "error" and "turn" not in event):
                return

    def close(self) -> None:
        self.client.close()
