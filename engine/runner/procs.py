"""Detached processes on POSIX and Windows: start, check, ask to stop, kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

IS_WINDOWS = sys.platform == "win32"
START_TIME_TOLERANCE_S = 1.0


def spawn_detached(args: list[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen:
    """Start a process in its own session (POSIX) or process group (Windows): closing the UI never stops it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab", buffering=0)  # noqa: SIM115 - handed to the child
    kwargs: dict = {"stdin": subprocess.DEVNULL, "stdout": log, "stderr": subprocess.STDOUT, "env": env, "cwd": cwd}
    if IS_WINDOWS:
        flags = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "DETACHED_PROCESS", 0)
        kwargs["creationflags"] = flags | getattr(subprocess, "CREATE_NO_WINDOW", 0)
    else:
        kwargs["start_new_session"] = True
    try:
        return subprocess.Popen(args, **kwargs)
    finally:
        log.close()


def pid_alive(pid: int | None) -> bool:
    """True while the process exists and is not a zombie."""
    if not pid or pid <= 0:
        return False
    if IS_WINDOWS:
        return _windows_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        # Field 3 is the state; a zombie has exited and only waits to be reaped.
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _windows_alive(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return False
    try:
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def same_process(pid: int | None, started: float | None) -> bool | None:
    """Is `pid` still the process that started at `started` (its start time as `process_started` read it)?

    True: yes. False: no such live process (gone, a zombie, or the pid now belongs to a process that started at
    another time: pid reuse, a reboot). None: a process has the pid but which one cannot be told (no start time
    was recorded, or the OS will not say). psutil reads the start time from /proc on Linux, from the process's
    creation time (GetProcessTimes) on Windows, and from the kernel's process table on macOS."""
    import psutil  # here, not at the top: workers, which only get signalled, do not pay for it

    if not pid or pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if started is None:
            return None
        # Wall-clock start times move when the clock is stepped (NTP); a reused pid started long before or after.
        return abs(proc.create_time() - started) <= START_TIME_TOLERANCE_S
    except psutil.NoSuchProcess:  # ZombieProcess is one too
        return False
    except psutil.AccessDenied:
        return None


def process_started(pid: int) -> float | None:
    """The start time of a live process (seconds since the epoch), the second half of its identity."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def ask_to_stop(pid: int | None, started: float | None) -> bool:
    """The polite signal: SIGTERM to the process group, CTRL_BREAK on Windows. The stage saves and exits.

    Sent only when `pid` is verifiably the process that started at `started`: never to a stranger that got the pid.
    A detached Windows worker has no console for CTRL_BREAK to reach, so the cancel flag in the run database
    (read with every heartbeat, 2 s apart) is what stops it there; the signal only speeds things up on POSIX.
    Returns whether the signal was sent."""
    if pid is None or same_process(pid, started) is not True:
        return False
    try:
        if IS_WINDOWS:
            os.kill(pid, signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
        else:
            os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError, OSError):
        return False
    return True


def kill_tree(pid: int | None, started: float | None) -> bool:
    """Hard stop of a worker and everything it started, only when `pid` is verifiably that worker."""
    if pid is None or same_process(pid, started) is not True:
        return False
    try:
        if IS_WINDOWS:
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(pid)], capture_output=True, check=False)
        else:
            os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        return False
    return True


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exit status unknown (the process was not our child)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name} (signal {-code})"
    return f"exit code {code}"


def install_stop_handler(callback) -> None:
    """Route the polite signal to `callback` (SIGTERM on POSIX, CTRL_BREAK on Windows)."""
    sig = getattr(signal, "SIGBREAK", None) if IS_WINDOWS else signal.SIGTERM
    if sig is not None:
        signal.signal(sig, lambda *_: callback())
