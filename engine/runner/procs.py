"""Detached processes on POSIX and Windows: start, check, ask to stop, kill."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

IS_WINDOWS = sys.platform == "win32"
IS_LINUX = sys.platform.startswith("linux")
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


ZYGOTE = "engine.runner.zygote"  # the module the fork server imports once (its docstring says why)
FORK_SERVER_ENV = "ABA_FORK_SERVER"  # the socket of a fork server many drivers share (engine.runner.forkd)
# Variables the libraries read once, when the server imports them (huggingface_hub fixes HF_HUB_OFFLINE and its
# folders on import, libgomp its wait policy): a shared server forks only for a driver whose values of these are
# its own; another is refused (NoForkServer) and starts its own server. Thread counts are not among them: the
# worker sets torch's itself (runner.threads).
IMPORT_ENV_PREFIXES = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TORCH", "PYTORCH_", "CUDA_", "TRL_", "PEFT_",
                       "ACCELERATE_", "BNB_", "BITSANDBYTES_", "XDG_CACHE_HOME", "OMP_WAIT_POLICY", "KMP_", "GOMP_",
                       "TRACKIO_", "WANDB_")
SERVED_CONNECT_S = 300.0  # a shared server answers once it has imported ZYGOTE (seconds, on a loaded machine)
_forkserver = None


GPU_DEVICES = ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")  # NVIDIA, ROCm, WSL's GPU


def zygote_enabled() -> bool:
    """Stage workers forked from a server that imported the training libraries once: Linux without a GPU (Windows
    has no fork; macOS frameworks are not fork-safe; a CUDA driver touched before a fork, as bitsandbytes' import
    does, is not usable in the child, and beside GPU training the 10 s import is small), and not where
    ABA_ZYGOTE=0 (then each worker is a fresh python)."""
    return (sys.platform.startswith("linux") and os.environ.get("ABA_ZYGOTE", "1") != "0"
            and not any(os.path.exists(dev) for dev in GPU_DEVICES))


class ForkedWorker:
    """A worker forked from the fork server, seen as the driver sees a Popen: pid, wait(), poll()."""

    def __init__(self, process) -> None:
        self._process = process
        self.pid = process.pid

    def wait(self) -> int:
        self._process.join()
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode


class NoForkServer(Exception):
    """The shared fork server cannot serve this driver: nothing listens at its socket (a server that has gone), or
    it runs another python or another copy of this code, or imported the libraries under other values of
    IMPORT_ENV_PREFIXES. No worker was started."""


class ServedWorker:
    """A worker forked by a shared fork server (engine.runner.forkd), seen as a Popen: pid, wait(), poll(). The
    server is its parent and sends its exit code; a server that went first leaves the code unknown (None), as for
    any process that is not our child (describe_exit says so)."""

    def __init__(self, sock: socket.socket, pid: int, rest: bytes = b"") -> None:
        self._sock, self.pid, self._buf = sock, pid, rest
        self.returncode: int | None = None
        self._lost = False  # the connection ended: the exit line came (returncode, None where unknown) or not
        self._read(block=False)

    def _read(self, block: bool) -> None:
        if self._lost:
            return
        try:
            self._sock.setblocking(block)
            while b"\n" not in self._buf:
                data = self._sock.recv(4096)
                if not data:
                    self._lost = True
                    break
                self._buf += data
        except BlockingIOError:
            return
        except OSError:
            self._lost = True
        if b"\n" in self._buf:
            self.returncode, self._lost = json.loads(self._buf.split(b"\n", 1)[0])["exit"], True
        if self._lost:
            self._sock.close()

    def poll(self) -> int | None:
        self._read(block=False)
        return self.returncode

    def wait(self) -> int | None:
        self._read(block=True)
        while self.returncode is None and pid_alive(self.pid):  # the server went first: wait for the worker itself
            time.sleep(0.2)
        return self.returncode


def _served(address: str, module: str, argv: list[str], log_path: Path, env: dict[str, str], cwd: Path) -> ServedWorker:
    """Ask the shared fork server at `address` for the worker. NoForkServer when no server listens there: nothing
    was started. Any failure after the request went out is raised as it is (a worker may have started)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(SERVED_CONNECT_S)
        try:
            sock.connect(address)
            if IS_LINUX:  # the server must be this user's own: each request carries the environment (API keys)
                uid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
                if uid != os.getuid():
                    raise PermissionError(f"the socket belongs to uid {uid}")
        except OSError as err:  # gone, refused, a full backlog, another user's: nothing was asked yet
            raise NoForkServer(f"no fork server at {address}: {err}") from err
        request = {"module": module, "argv": list(argv), "log": str(log_path), "env": dict(env), "cwd": str(cwd),
                   "code": code_identity()}
        sock.sendall(json.dumps(request).encode() + b"\n")
        buf = b""
        while b"\n" not in buf:
            data = sock.recv(4096)
            if not data:
                raise RuntimeError(f"the fork server at {address} closed the connection before it said the pid")
            buf += data
        line, rest = buf.split(b"\n", 1)
        reply = json.loads(line)
        if "refused" in reply:
            raise NoForkServer(f"the fork server at {address} refused: {reply['refused']}")
        if "pid" not in reply:
            raise RuntimeError(f"the fork server at {address} could not start the worker: {reply.get('error')}")
    except BaseException:
        sock.close()
        raise
    return ServedWorker(sock, int(reply["pid"]), rest)


def code_identity() -> dict[str, str]:
    """Which python and which copy of this code: a shared server forks only for a driver of the same."""
    return {"python": sys.executable, "engine": str(Path(__file__).resolve().parent.parent)}


def import_env(env) -> dict[str, str]:
    """The part of an environment the training libraries read when they are imported (IMPORT_ENV_PREFIXES)."""
    return {k: v for k, v in env.items() if k.startswith(IMPORT_ENV_PREFIXES) and not k.endswith("_NUM_THREADS")}


def _served_address() -> str | None:
    """The shared fork server's socket, where ABA_FORK_SERVER names one that exists."""
    address = os.environ.get(FORK_SERVER_ENV)
    return address if address and os.path.exists(address) else None


def _forked_main(module: str, argv: list[str], log_path: str, env: dict[str, str], cwd: str) -> None:
    """In the forked child: what spawn_detached gives a fresh process (its own session, the log as stdout and
    stderr, no stdin, the environment and directory asked for), then the module's main(argv) and its exit code."""
    import importlib
    import traceback

    os.setsid()
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    # Unbuffered, as PYTHONUNBUFFERED makes a fresh worker, whatever the server that forked this one started with
    # (write_through alone leaves the bytes in the binary buffer): a worker killed mid-line loses no line it printed.
    import io

    def unbuffered(fd: int, was):
        return io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding=was.encoding, errors=was.errors,
                                write_through=True)

    sys.stdout = sys.__stdout__ = unbuffered(1, sys.stdout)
    sys.stderr = sys.__stderr__ = unbuffered(2, sys.stderr)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    sys.argv = [module, *argv]
    try:
        code = importlib.import_module(module).main(argv)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:  # noqa: BLE001 - as an uncaught exception ends python: the traceback, exit code 1
        traceback.print_exc()
        code = 1
    # What the interpreter does on the way out, which a multiprocessing child skips: wait for the non-daemon
    # threads, then the atexit handlers (trackio and other trackers flush their last rows there).
    import atexit
    import threading

    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 0)


def _server():
    import multiprocessing

    global _forkserver
    if _forkserver is None:
        _forkserver = multiprocessing.get_context("forkserver")
        _forkserver.set_forkserver_preload([ZYGOTE])
    return _forkserver


def warm_zygote() -> None:
    """Start the fork server now (it imports ZYGOTE in its own process while this one goes on): a driver calls it
    when a stage that loads models is ahead, so that the import overlaps the light stages before it."""
    if zygote_enabled() and _served_address() is None:
        from multiprocessing import forkserver

        _server()
        forkserver.ensure_running()


def spawn_worker(module: str, argv: list[str], log_path: Path, env: dict[str, str], cwd: Path, *, zygote: bool = True):
    """`python -m module argv...` detached, its output appended to log_path. With zygote on Linux: forked from the
    shared fork server that ABA_FORK_SERVER names (engine.runner.forkd), else from this process's own
    (multiprocessing's forkserver, started on first use, which imports ZYGOTE once); without zygote, or with
    ABA_ZYGOTE=0, a fresh interpreter (spawn_detached). Returns a Popen, a ServedWorker or a ForkedWorker, each
    with pid, wait() and poll()."""
    if not (zygote and zygote_enabled()):
        return spawn_detached([sys.executable, "-m", module, *argv], log_path, env=env, cwd=cwd)
    import multiprocessing.process

    log_path.parent.mkdir(parents=True, exist_ok=True)
    if (address := _served_address()) is not None:
        try:
            return _served(address, module, argv, log_path, env, cwd)
        except NoForkServer:
            pass  # gone, or it refused this driver (NoForkServer says why): this process's own server, as without one
    process = _server().Process(target=_forked_main, args=(module, argv, str(log_path), env, str(cwd)),
                                  name=f"{module} {' '.join(argv)}")
    process.start()
    # Not multiprocessing's child to join or terminate when this process exits: a worker outlives its driver,
    # as a detached process does (the driver waits for it with wait()).
    multiprocessing.process._children.discard(process)
    return ForkedWorker(process)


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
