"""Network guard for the foreign test tier: no Python process of a run leaves loopback.

Put this folder on ``PYTHONPATH`` and name a file in ``READINESS_NETGUARD_FILE``: every
Python process started with that environment (the ``readiness run`` process, the papermill
kernels it starts, the httpbin workers) installs an audit hook (PEP 578) at start-up.
Each ``socket.connect``/``sendto``/``sendmsg`` to an internet address outside 127.0.0.0/8
and ::1, and each name lookup (``getaddrinfo``, ``gethostbyname``, …) of anything but a
loopback literal or ``localhost``, is appended to the file as one JSON line and then
refused before the system call is made: the connect raises ``OSError(ENETUNREACH)``, the
lookup ``socket.gaierror(EAI_NONAME)``. Refusing matters as much as recording: the
offending packet or DNS query is never sent, even where no network namespace is available.
The tests assert that the file is empty, and read ``<file>.procs`` (one line per process
that installed the guard) to prove the guard was active where it had to be: an empty
violations file from processes that never loaded the guard would prove nothing.

Unix sockets, netlink and other non-internet families are not network traffic and pass.
Without ``READINESS_NETGUARD_FILE`` this module does nothing but hand over to a
``sitecustomize`` it may shadow.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys

_ENV = "READINESS_NETGUARD_FILE"
_LOCAL_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost", "ip6-loopback"})
_LOOKUPS = frozenset({"socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex",
                      "socket.gethostbyaddr", "socket.getnameinfo"})
_SENDS = frozenset({"socket.connect", "socket.sendto", "socket.sendmsg"})


def is_loopback_host(host: object) -> bool:
    """A loopback literal (127.0.0.0/8, ::1, ::ffff:127.x) or the name localhost."""
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    name = host.strip("[]").lower()
    if name in _LOCAL_NAMES:
        return True
    try:
        addr = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def _inet_target(sock: object, address: object) -> str | None:
    """``host:port`` of an internet address that is not loopback; None for anything else."""
    family = getattr(sock, "family", None)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None  # AF_UNIX, AF_NETLINK, …: not network traffic
    if not isinstance(address, tuple) or not address:
        return None  # e.g. sendmsg without an address: the socket is already connected (checked then)
    host = address[0]
    return None if is_loopback_host(host) else f"{host}:{address[1] if len(address) > 1 else ''}"


def _append(path: str, record: dict[str, object]) -> None:
    import json

    line = json.dumps(record) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _record(path: str, event: str, target: str) -> None:
    _append(path, {"pid": os.getpid(), "argv": sys.argv[:3], "event": event, "target": target})


def install(path: str) -> None:
    """Install the audit hook writing to ``path`` (once per process; hooks cannot be removed)."""
    import errno

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event in _SENDS:
            target = _inet_target(args[0], args[1] if len(args) > 1 else None)
            if target is not None:
                _record(path, event, target)
                raise OSError(errno.ENETUNREACH, f"network guard: {event} to {target} refused (loopback only)")
        elif event in _LOOKUPS:
            host = args[0] if args else None
            if event == "socket.getnameinfo" and isinstance(host, tuple):
                host = host[0] if host else None
            if host is None or host == "" or is_loopback_host(host):
                return  # no lookup (a passive bind) or a loopback literal / localhost
            _record(path, event, str(host))
            raise socket.gaierror(socket.EAI_NONAME, f"network guard: {event}({host!r}) refused (loopback only)")

    sys.addaudithook(hook)
    # sys.argv is not set yet while site runs; the command line tells which process this is
    try:
        with open(f"/proc/{os.getpid()}/cmdline", "rb") as f:
            cmdline = [a.decode(errors="replace") for a in f.read().split(b"\0") if a][:4]
    except OSError:
        cmdline = [sys.executable]
    _append(path + ".procs", {"pid": os.getpid(), "cmdline": cmdline})


def _chain() -> None:
    """Run the ``sitecustomize`` this module shadows, if any (later on sys.path)."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None and spec.origin != os.path.abspath(__file__):
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


if os.environ.get(_ENV):
    install(os.environ[_ENV])
_chain()
