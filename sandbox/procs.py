"""Process plumbing: spawn, recognise and stop sandbox app processes; bind their ports.

The launcher may be asked to stop processes it did not start itself (``readiness sandbox
down`` in a new shell), identified only by pids in ``sandbox.json``. A pid can be reused
by an unrelated process after a crash, so before signalling anything we check on Linux
that the pid's command line is ``… -m sandbox serve --app <id> … --state-dir <dir>`` (for
the local Stripe API, ``… -m sandbox.stripe_local … --state-dir <dir>``); elsewhere we
fall back to "the pid exists". Each process runs in its own session
(``start_new_session``), so its whole process group is signalled, never anything else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

# Popen objects of the apps this process started, so that they can be reaped (no
# zombies, no "subprocess still running" warnings) when this process stops them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def serve_command(app_id: str, host: str, port: int, state_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sandbox",
        "serve",
        "--app",
        app_id,
        "--host",
        host,
        "--port",
        str(port),
        "--state-dir",
        str(state_dir),
    ]


def stripe_command(host: str, port: int, state_dir: Path) -> list[str]:
    """The sandbox's local Stripe API (:mod:`sandbox.stripe_local`)."""
    return [
        sys.executable,
        "-m",
        "sandbox.stripe_local",
        "--host",
        host,
        "--port",
        str(port),
        "--state-dir",
        str(state_dir),
    ]


def spawn(app_id: str, host: str, port: int, state_dir: Path, env: Mapping[str, str], log: Path) -> int:
    """Start one app process in its own session, output appended to ``log``; its pid."""
    return spawn_command(serve_command(app_id, host, port, state_dir), state_dir, env, log)


def spawn_command(command: list[str], state_dir: Path, env: Mapping[str, str], log: Path) -> int:
    """Start ``command`` in its own session from ``state_dir``, output appended to ``log``; its pid."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            command,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=state_dir,
        )
    _CHILDREN[proc.pid] = proc
    return proc.pid


def exit_code(pid: int) -> int | None:
    """Exit code of a child this process started and that has ended; None otherwise."""
    proc = _CHILDREN.get(pid)
    return None if proc is None else proc.poll()


def _reap(pid: int) -> None:
    proc = _CHILDREN.get(pid)
    if proc is not None and proc.poll() is not None:
        del _CHILDREN[pid]


def is_alive(pid: int) -> bool:
    """True while the pid runs (a zombie counts as ended)."""
    _reap(pid)
    proc = _CHILDREN.get(pid)
    if proc is not None:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def is_sandbox_app(pid: int, app_id: str, state_dir: Path) -> bool:
    """True when ``pid`` is alive and is the sandbox process serving ``app_id`` from ``state_dir``."""
    if not is_alive(pid):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.parent.exists():
        return True  # no /proc on this platform: the recorded pid is the best we have
    try:
        args = cmdline.read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    try:
        at = args.index("--app")
    except ValueError:
        return False
    return "sandbox" in args and "serve" in args and args[at + 1 : at + 2] == [app_id] and str(state_dir) in args


def is_sandbox_stripe(pid: int, state_dir: Path) -> bool:
    """True when ``pid`` is alive and is the local Stripe API of the sandbox in ``state_dir``."""
    if not is_alive(pid):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.parent.exists():
        return True
    try:
        args = cmdline.read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    return "sandbox.stripe_local" in args and str(state_dir) in args


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def stop(pids: Iterable[int], timeout_s: float) -> None:
    """SIGTERM each process group, wait up to ``timeout_s``, then SIGKILL what is left."""
    pending = [pid for pid in pids if is_alive(pid)]
    for pid in pending:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        time.sleep(0.02)
        pending = [pid for pid in pending if is_alive(pid)]
    for pid in pending:
        _signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while pending and time.monotonic() < deadline:
        time.sleep(0.02)
        pending = [pid for pid in pending if is_alive(pid)]
    for pid in list(_CHILDREN):
        _reap(pid)


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket (``SO_REUSEADDR`` as uvicorn would set it); OSError on failure.

    The protocol must be given as ``IPPROTO_TCP`` explicitly: asyncio only sets
    ``TCP_NODELAY`` on accepted connections whose socket says so, and without it every
    keep-alive response waits ~40 ms for a delayed ACK (Nagle's algorithm).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def port_in_use(host: str, port: int) -> bool:
    """True when ``host:port`` cannot be bound the way an app binds it."""
    try:
        bind_socket(host, port).close()
    except OSError:
        return True
    return False


def log_tail(path: Path, lines: int = 3) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(line for line in text.strip().splitlines()[-lines:])
