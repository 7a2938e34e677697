"""The foreign tier's network guard catches what it must, and lets loopback through.

A Python process started with the guard's environment tries a connect to a private
address (10.255.255.1) and name lookups of public names, directly and from a child
process it starts (as the runner starts kernels). The guard must record every one and
refuse it before any packet or DNS query leaves; loopback traffic must pass untouched.
When a loopback-only namespace is available the probe runs inside one as well, so even a
guard that failed to refuse could not reach the network.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from foreign_tier import GUARD_DIR, guard_env, read_violations

pytestmark = pytest.mark.foreign

PROBE = r"""
import json, socket, subprocess, sys
out = {}

def attempt(name, fn):
    try:
        out[name] = "ok: " + repr(fn())
    except OSError as exc:
        out[name] = f"{type(exc).__name__}: {exc}"

def private_connect():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1)
    try:
        return s.connect(("10.255.255.1", 9))
    finally:
        s.close()

attempt("connect_private", private_connect)
attempt("getaddrinfo_public", lambda: socket.getaddrinfo("example.com", 80))
attempt("gethostbyname_public", lambda: socket.gethostbyname("example.org"))
attempt("create_connection_public", lambda: socket.create_connection(("example.net", 443), timeout=1))

# loopback must pass: a listener, a connect by literal and by the name localhost, a Unix socket pair
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(4)
port = srv.getsockname()[1]
attempt("loopback_literal", lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close())
attempt("loopback_name", lambda: socket.create_connection(("localhost", port), timeout=1).close())
attempt("unix_pair", lambda: [s.close() for s in socket.socketpair()] and None)

# a child inherits the environment, so it is guarded too (the runner's kernels are such children)
child = subprocess.run([sys.executable, "-c", "import socket; socket.getaddrinfo('example.net', 443)"],
                       capture_output=True, text=True, timeout=30)
out["child_exit"] = child.returncode
out["child_stderr"] = child.stderr.strip().splitlines()[-1:]
print(json.dumps(out))
"""


def _probe(tmp_path: Path, namespace: bool) -> tuple[dict[str, object], list[dict[str, object]], list[str]]:
    violations = tmp_path / "probe.netguard.jsonl"
    argv = [sys.executable, "-c", PROBE]
    if namespace:
        argv = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=guard_env(violations), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    procs = Path(f"{violations}.procs").read_text().splitlines() if Path(f"{violations}.procs").exists() else []
    return json.loads(done.stdout.strip().splitlines()[-1]), read_violations(violations), procs


@pytest.mark.parametrize("namespace", [False, True], ids=["host-namespace", "loopback-namespace"])
def test_guard_records_and_refuses_non_loopback(tmp_path: Path, netns, namespace: bool) -> None:
    if namespace and not netns.isolated:
        pytest.skip(f"no loopback-only namespace here ({netns.reason}); the host-namespace case covers the guard")
    out, violations, procs = _probe(tmp_path, namespace)

    recorded = [(v["event"], v["target"]) for v in violations]
    assert recorded == [
        ("socket.connect", "10.255.255.1:9"),
        ("socket.getaddrinfo", "example.com"),
        ("socket.gethostbyname", "example.org"),
        ("socket.getaddrinfo", "example.net"),  # create_connection resolves first: refused there
        ("socket.getaddrinfo", "example.net"),  # the child process
    ], violations
    assert len({v["pid"] for v in violations}) == 2, "the child's lookup must come from another process"
    # refused by the guard before the system call, not merely failing for lack of a network
    assert out["connect_private"] == ("OSError: [Errno 101] network guard: socket.connect to 10.255.255.1:9 "
                                      "refused (loopback only)")
    assert out["getaddrinfo_public"] == ("gaierror: [Errno -2] network guard: "
                                         "socket.getaddrinfo('example.com') refused (loopback only)")
    assert out["gethostbyname_public"] == ("gaierror: [Errno -2] network guard: "
                                           "socket.gethostbyname('example.org') refused (loopback only)")
    assert "network guard" in out["create_connection_public"]
    assert out["child_exit"] == 1 and "network guard" in out["child_stderr"][0]
    # loopback passes untouched
    assert out["loopback_literal"] == "ok: None"
    assert out["loopback_name"] == "ok: None"
    assert out["unix_pair"] == "ok: None"
    assert len(procs) == 2, procs  # the probe and its child both loaded the guard


def test_guard_is_inactive_without_its_file(tmp_path: Path) -> None:
    """On PYTHONPATH but without READINESS_NETGUARD_FILE the module installs nothing."""
    env = guard_env(tmp_path / "unused.jsonl")
    del env["READINESS_NETGUARD_FILE"]
    code = "import sys, sitecustomize; print(sitecustomize.__file__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == GUARD_DIR / "sitecustomize.py"
    assert list(tmp_path.iterdir()) == []
