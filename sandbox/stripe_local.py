"""``python -m sandbox.stripe_local --port P --state-dir D``: the sandbox's local Stripe API.

The checkout app (A5) and the suite's payments code talk to Stripe through stripe-python;
in the sandbox that Stripe is localstripe, served by this module with three changes to
how ``python -m localstripe`` runs it:

* **Loopback only.** localstripe binds ``::`` (every interface, IPv4 and IPv6) and would
  take card-like data from the whole network. Here the socket is bound by the sandbox's
  own :func:`sandbox.procs.bind_socket` to a loopback address (anything else is refused)
  and handed to aiohttp, so a busy port ends in one clear line and exit code 3, like
  the apps.
* **State inside the sandbox's state folder.** localstripe pickles its whole store to the
  fixed path ``/tmp/localstripe.pickle``, shared by every user and every sandbox on the
  machine. Here it lives in ``<state-dir>/stripe/localstripe.pickle`` (mode 0600, written
  atomically), so two sandboxes never share a Stripe account and a restart keeps the
  prices a previous run created.
* **Prices and idempotent requests**, which localstripe lacks (:mod:`sandbox.stripe_extras`).

It also answers ``GET /_config/health`` without an API key, so the launcher can wait for
it the way it waits for the apps' ``/health``.
"""

from __future__ import annotations

import argparse
import errno
import os
import pickle
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # aiohttp is imported only by the serving process, not by the launcher
    from aiohttp import web

EXIT_CONFIG = 2
EXIT_PORT = 3
SERVICE = "localstripe"
HEALTH_PATH = "/_config/health"
STATE_SUBDIR = "stripe"
STATE_FILE = "localstripe.pickle"


def state_file(state_dir: Path) -> Path:
    """Where the local Stripe keeps its store for the sandbox in ``state_dir``."""
    return Path(state_dir) / STATE_SUBDIR / STATE_FILE


def _load(self: dict[str, Any], path: Path) -> None:
    try:
        with open(path, "rb") as fh:
            saved = pickle.load(fh)  # written by this module only, in a 0700 folder
    except FileNotFoundError:
        return
    self.clear()
    self.update(saved)


def _dump(self: dict[str, Any], path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(dict(self), fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def use_state_file(path: Path) -> None:
    """Point localstripe's store at ``path`` instead of ``/tmp/localstripe.pickle``.

    localstripe calls ``store.try_load_from_disk()`` and ``store.dump_to_disk()`` with no
    argument; both are replaced on the store's class, which only this process uses.
    """
    from localstripe.resources import Store

    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    Store.try_load_from_disk = lambda self: _load(self, path)  # type: ignore[method-assign]
    Store.dump_to_disk = lambda self: _dump(self, path)  # type: ignore[method-assign]


_installed: list[bool] = []


async def health(request: web.Request) -> web.Response:
    from aiohttp import web

    return web.json_response({"status": "ok", "service": SERVICE})


def build_app() -> web.Application:
    """localstripe's aiohttp app with the sandbox's extras and health route registered."""
    from localstripe import server

    from sandbox.stripe_extras import install

    app = server.app
    if not _installed:  # localstripe's app is a module global: extend it once per process
        install(app)
        app.router.add_get(HEALTH_PATH, health)
        _installed.append(True)
    return app


def serve(host: str, port: int, state_dir: Path) -> int:
    """Serve until SIGTERM/SIGINT; 2 for a bad configuration, 3 for a busy port."""
    from sandbox.common.config import ConfigError, require_loopback
    from sandbox.procs import bind_socket

    try:
        require_loopback(SERVICE, host)
    except ConfigError as exc:
        print(f"sandbox {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        sock = bind_socket(host, port)
    except OSError as exc:
        reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
        print(f"sandbox {SERVICE}: port {port} on {host} {reason}", file=sys.stderr)
        return EXIT_PORT
    from localstripe.resources import store

    use_state_file(state_file(state_dir))
    store.try_load_from_disk()
    from aiohttp import web

    app = build_app()
    print(f"sandbox {SERVICE}: serving http://{host}:{port} (pid {os.getpid()})", file=sys.stderr, flush=True)
    web.run_app(app, sock=sock, print=None, access_log=None, handle_signals=True, shutdown_timeout=2)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.stripe_local", description="Serve the local Stripe API.")
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--host", default="127.0.0.1", help="a loopback IP address")
    parser.add_argument("--state-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    return serve(args.host, args.port, args.state_dir)


if __name__ == "__main__":
    sys.exit(main())
