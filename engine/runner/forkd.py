"""A fork server many drivers share (Linux): `python -m engine.runner.forkd SOCKET [--owner PID]`.

Each driver otherwise starts its own fork server (multiprocessing's, in engine.runner.procs), which imports torch,
transformers, PEFT and TRL once per run: about 5 CPU-seconds. Where many runs start one after another on one machine
(a sweep, a test session: 48 runs in `make test`), a driver given this server's socket in ABA_FORK_SERVER asks it
instead, and the import is paid once. Only a driver whose environment agrees with the server's on what the
libraries read when imported (procs.IMPORT_ENV_PREFIXES: HF_HUB_OFFLINE, the cache folders, ...) is served; another
is refused and starts its own server. What a worker forked here is matches a worker of the driver's own server
(procs._forked_main: its own session, the log as stdout and stderr, the environment and directory asked for).

The protocol, one JSON object per line over a Unix socket (mode 0600): the driver sends {module, argv, log, env,
cwd, code} (code: its python and copy of this code); the server answers {"refused": why}, or forks, answers
{"pid": N} and, being the worker's parent, reaps it and sends {"exit": code} (a negative code: the signal that
ended it, as a Popen says) on the same connection. A driver that dies first loses
nothing: the worker runs on, and the server reaps it. The server exits when --owner's process has gone (a test
session's pytest) or on SIGTERM/SIGINT; its workers run on.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import traceback
from pathlib import Path

from engine.runner.procs import ZYGOTE, _forked_main, code_identity, import_env, pid_alive

OWNER_CHECK_S = 1.0


def _fork(request: dict, close: list) -> int:
    """Fork one worker; in the child, nothing of the server's stays open and its signal set-up is undone."""
    for stream in (sys.stdout, sys.stderr):  # nothing of the server's own output is left to be written twice
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    pid = os.fork()
    if pid:
        return pid
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for thing in close:
            with contextlib.suppress(OSError):
                thing.close() if hasattr(thing, "close") else os.close(thing)
        _forked_main(request["module"], list(request["argv"]), request["log"], dict(request["env"]), request["cwd"])
    finally:
        os._exit(1)  # _forked_main ends with os._exit; this is for a request it could not even start on
    return 0


def _refusal(request: dict, code: dict[str, str], mine: dict[str, str]) -> str | None:
    """Why this server cannot fork the driver's worker (another python or copy of the code; the libraries here
    were imported under other values of what they read on import), or None."""
    if request.get("code") != code:
        return f"another python or copy of the code ({request.get('code')})"
    theirs = import_env(request["env"])
    keys = sorted(k for k in set(theirs) | set(mine) if theirs.get(k) != mine.get(k))
    return f"imported under other values of {', '.join(keys)}" if keys else None


def serve(listener: socket.socket, owner: int | None, mine: dict[str, str]) -> None:
    """Fork a worker for each request whose import-time environment is `mine`; reap them; until the owner goes."""
    code = code_identity()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a worker ended: select wakes through the wake-up pipe
    signal.set_wakeup_fd(wake_w)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(wake_r, selectors.EVENT_READ, "wake")
    pending: dict[socket.socket, bytes] = {}  # open connections and what they sent that is not a whole line yet
    children: dict[int, socket.socket | None] = {}  # worker pid -> the connection waiting for its exit code

    def drop(conn: socket.socket) -> None:
        sel.unregister(conn)
        pending.pop(conn, None)
        conn.close()
        for pid, owner_conn in children.items():
            if owner_conn is conn:
                children[pid] = None  # its driver has gone: the worker runs on; reaped here, told to nobody

    def send(conn: socket.socket | None, obj: dict) -> None:
        if conn is None:
            return
        try:
            conn.sendall(json.dumps(obj).encode() + b"\n")
        except OSError:
            drop(conn)

    while True:
        for key, _ in sel.select(timeout=OWNER_CHECK_S):
            if key.data == "accept":
                try:
                    conn, _ = listener.accept()
                except OSError:  # out of file descriptors, a connection reset before it was taken: the next one
                    continue
                pending[conn] = b""
                sel.register(conn, selectors.EVENT_READ, "conn")
            elif key.data == "wake":
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_r, 4096):
                        pass
            else:
                conn = key.fileobj
                try:
                    data = conn.recv(1 << 16)
                except OSError:
                    data = b""
                if not data:
                    drop(conn)
                    continue
                pending[conn] += data
                while conn in pending and b"\n" in pending[conn]:
                    line, pending[conn] = pending[conn].split(b"\n", 1)
                    try:
                        request = json.loads(line)
                        if why := _refusal(request, code, mine):
                            send(conn, {"refused": why})
                            continue
                        pid = _fork(request, [listener, *pending, wake_r, wake_w, sel])
                    except Exception as err:  # noqa: BLE001 - one bad request never ends the server for the others
                        send(conn, {"error": f"{type(err).__name__}: {err}"})
                        continue
                    children[pid] = conn
                    send(conn, {"pid": pid})
        while children:  # reap every worker that ended, and tell its driver how
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:  # none left to reap (someone else did): their exit codes are unknown
                for waiting in list(children.values()):
                    send(waiting, {"exit": None})
                children.clear()
                break
            if pid == 0:
                break
            send(children.pop(pid, None), {"exit": os.waitstatus_to_exitcode(status)})
        if owner is not None and not pid_alive(owner):
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.runner.forkd", description=__doc__.splitlines()[0])
    parser.add_argument("socket", type=Path, help="the Unix socket to listen on (drivers find it in ABA_FORK_SERVER)")
    parser.add_argument("--owner", type=int, help="exit once this process has gone")
    args = parser.parse_args(argv)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with contextlib.suppress(FileNotFoundError):
        args.socket.unlink()
    old = os.umask(0o177)  # the socket is the user's alone: whoever can connect runs code as them
    try:
        listener.bind(str(args.socket))
    finally:
        os.umask(old)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        listener.listen(64)  # drivers that connect while the import below runs wait in the backlog
        mine = import_env(os.environ)  # what the libraries read as they are imported (some set variables of their own)
        try:
            importlib.import_module(ZYGOTE)
        except Exception:  # noqa: BLE001 - as in the driver's own server: the worker meets the failure and reports it
            traceback.print_exc()
        serve(listener, args.owner, mine)
    except KeyboardInterrupt:
        pass
    finally:
        with contextlib.suppress(OSError):
            args.socket.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
