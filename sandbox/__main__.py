"""``python -m sandbox serve --app A3 --port 18103 --state-dir D``: serve one app.

The launcher runs one such process per app so that a slow or crashed app never stalls
the others. The process binds its socket itself before handing it to uvicorn, so that a
port already in use ends in one clear line on stderr and exit code 3 — never an
``EADDRINUSE`` traceback — and the launcher can report it by app and port.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

EXIT_CONFIG = 2
EXIT_PORT = 3


def serve(app_id: str, host: str, port: int, state_dir: Path) -> int:
    from sandbox.common.config import AppConfig, ConfigError
    from sandbox.procs import bind_socket

    try:
        config = AppConfig.from_env(app_id, host, port, state_dir, os.environ)
    except (ConfigError, ValueError) as exc:
        print(f"sandbox {app_id}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        sock = bind_socket(host, port)
    except OSError as exc:
        reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
        print(f"sandbox {app_id}: port {port} on {host} {reason}", file=sys.stderr)
        return EXIT_PORT

    import uvicorn

    from sandbox.apps import load_definition
    from sandbox.common.factory import build_app

    app = build_app(config, load_definition(app_id))
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=3,
            server_header=False,
        )
    )
    print(f"sandbox {app_id}: serving {config.base_url} (pid {os.getpid()})", file=sys.stderr, flush=True)
    server.run(sockets=[sock])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description="Serve one sandbox app.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="serve one app on loopback")
    run.add_argument("--app", required=True, help="app id, A1..A8")
    run.add_argument("--port", required=True, type=int)
    run.add_argument("--host", default="127.0.0.1", help="a loopback IP address")
    run.add_argument("--state-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    return serve(args.app, args.host, args.port, args.state_dir)


if __name__ == "__main__":
    sys.exit(main())
