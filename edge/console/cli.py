"""``edge-console``: serve the stations' web console; ``edge-console hash-password``: a users-file entry."""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from edge.console import LIBRARIES
from edge.tool import ToolError, missing_extra, run_tool

EPILOG = """
examples:
  edge-console --station line3=tcp://127.0.0.1:5556 --snapshot line3=tcp://127.0.0.1:5557 \\
      --control line3=tcp://127.0.0.1:5558 --rejects line3=/var/lib/edge/rejects
  edge-console --listen 0.0.0.0:8443 --users /etc/edge/console-users.toml \\
      --certificate console.crt --private-key console.key --station ...
  edge-console hash-password          (prints the password line of a users-file entry)

Without --users the console serves this machine only (--listen 127.0.0.1:PORT) and asks no log-in.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """``edge-console``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["hash-password"]:
        return hash_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="edge-console",
        description="A web page for line engineers and operators: live frames with their anomaly maps, counters, "
        "rejects and their review, and (for operators) pause, threshold and recipe. It follows edge-run stations "
        "like any subscriber: the line never waits on it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from edge.bridge.config import add_station_flags

    add_station_flags(parser, "that station's control endpoint: operators may then pause it, set its threshold "
                      "and switch its recipe; the page shows its calibration")  # fmt: skip
    parser.add_argument(
        "--rejects", action="append", default=[], metavar="NAME=DIR", help="that station's reject records folder"
    )
    parser.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT to serve on (default 127.0.0.1:8080)")
    parser.add_argument("--review", type=Path, default=Path("review"), help="review folder (default ./review)")
    parser.add_argument("--users", type=Path, help="users file (TOML: [users.NAME] role, password)")
    parser.add_argument("--session-minutes", type=int, default=60, help="idle minutes before a log-in expires")
    parser.add_argument("--certificate", type=Path, help="HTTPS: the server's certificate (PEM)")
    parser.add_argument("--private-key", type=Path, help="HTTPS: its private key (PEM)")
    parser.add_argument("--offline-heartbeats", type=int, default=3, help="heartbeats missed before offline")
    parser.add_argument(
        "--mqtt", metavar="URL", help="also show every station edge-bridge publishes to this broker (mqtt://HOST)"
    )
    parser.add_argument("--mqtt-prefix", default="edge", help="the bridges' --mqtt-prefix (default edge)")
    args = parser.parse_args(argv)
    if (refused := missing_extra("edge-console", "console", LIBRARIES)) is not None:
        return refused
    logging.basicConfig(level=logging.INFO, format="edge-console: %(message)s")
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    from edge.bridge import bind_error
    from edge.bridge.config import ConfigError, station_links
    from edge.console.app import make_app
    from edge.console.service import Console, ConsoleSettings
    from edge.console.stations import Fleet
    from edge.console.users import Users
    from edge.metrics import listen_address

    def body() -> int:
        import uvicorn

        stations = station_links(args)
        if not stations and not args.mqtt:
            raise ToolError("no station to show: give --station NAME=ENDPOINT (repeat for several), or --mqtt URL")
        broker = None
        if args.mqtt:
            if (refused := missing_extra("edge-console", "bridge", ("paho",))) is not None:
                return refused
            from edge.bridge.mqtt import broker as parse_broker

            parse_broker(args.mqtt)  # ConfigError naming the problem
            broker = (args.mqtt, args.mqtt_prefix)
        rejects = {}
        for text in args.rejects:
            name, _, folder = text.partition("=")
            if name not in {s.name for s in stations} or not folder:
                raise ToolError(f"--rejects {text!r}: write NAME=DIR for a --station NAME")
            rejects[name] = Path(folder)
        try:
            host, port = listen_address(args.listen, "127.0.0.1")
        except ValueError as exc:
            raise ToolError(f"--listen {exc}") from exc
        users = Users(args.users) if args.users else None
        if users is None and not _loopback(host):
            raise ToolError(
                f"--listen {args.listen} without --users would let anyone on the network steer the stations: "
                "give --users FILE (edge-console hash-password), or listen on 127.0.0.1"
            )
        if (args.certificate is None) != (args.private_key is None):
            raise ToolError("HTTPS needs both --certificate and --private-key")
        for path in (args.certificate, args.private_key):
            if path is not None and not path.is_file():
                raise ToolError(f"{path} does not exist: give the PEM file")
        if args.session_minutes <= 0 or args.offline_heartbeats <= 0:
            raise ToolError("--session-minutes and --offline-heartbeats must be positive")
        if reason := bind_error(host, port):
            raise ToolError(f"cannot serve on {host}:{port}: {reason}")
        settings = ConsoleSettings(rejects=rejects, review=args.review, users=users)
        with Console(Fleet(stations, args.offline_heartbeats, broker), settings) as console:
            app = make_app(console, args.session_minutes, https=args.certificate is not None)
            scheme = "https" if args.certificate else "http"
            shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
            logging.getLogger("edge.console").info("console on %s://%s:%d/", scheme, shown, port)
            server = uvicorn.Server(
                uvicorn.Config(
                    app, host=host, port=port, log_level="warning", access_log=False,
                    ssl_certfile=args.certificate, ssl_keyfile=args.private_key, timeout_graceful_shutdown=2,
                )
            )  # fmt: skip
            server.run()
        return 0

    return run_tool("edge-console", body, (ConfigError,))


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def hash_main(argv: Sequence[str]) -> int:
    """``edge-console hash-password [--user NAME] [--role ROLE]``: a users-file entry, the password read from the
    terminal (or one line of standard input)."""
    parser = argparse.ArgumentParser(prog="edge-console hash-password", description=hash_main.__doc__)
    parser.add_argument("--user", default="NAME")
    parser.add_argument("--role", default="viewer", choices=("viewer", "operator"))
    args = parser.parse_args(argv)
    if (refused := missing_extra("edge-console", "console", LIBRARIES)) is not None:
        return refused
    from edge.console.users import hash_password

    def body() -> int:
        if sys.stdin.isatty():
            password = getpass.getpass("password: ")
            if getpass.getpass("again: ") != password:
                raise ToolError("the two passwords differ")
        else:
            password = sys.stdin.readline().rstrip("\n")
        if len(password) < 8:
            raise ToolError("give a password of at least 8 characters")
        print(f'[users.{args.user}]\nrole = "{args.role}"\npassword = "{hash_password(password)}"')
        return 0

    return run_tool("edge-console", body)
