"""``edge-bridge``: serve stations' verdicts on OPC UA, Modbus TCP and Prometheus; ``edge-bridge certs``: make
the OPC UA certificates."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from edge.bridge import LIBRARIES
from edge.tool import ToolError, missing_extra, run_tool

EPILOG = """
Each station is an OPC UA object (ns=2;s=<station>, variables ns=2;s=<station>.Seq, .Verdict, .Score, ...;
Seq is written last) and a Modbus unit (1, 2, ... in the order given) with a NewResult/Acknowledge handshake:
read the result when NewResult = 1, then write ResultId (register 2) to Acknowledge (register 1). Register
table and node ids: docs/plc.md. The line never waits on the bridge; a station silent for three
heartbeats shows State offline.

examples:
  edge-bridge --station line3=tcp://10.0.0.5:5556 --snapshot line3=tcp://10.0.0.5:5557
  edge-bridge --station demo=tcp://127.0.0.1:5556 --opcua opc.tcp://127.0.0.1:4840/edge/ \\
      --modbus 127.0.0.1:5020 --metrics 127.0.0.1:9102
  edge-bridge --config /etc/edge/bridge.toml          (example: deploy/bridge.toml)
  edge-bridge certs --out /etc/edge/opcua --name bridge           (the bridge's certificate and key)
  edge-bridge certs --out keys --name scada --client               (a client's: its key stays with the client,
  cp keys/scada.der /etc/edge/opcua/trusted/                        its certificate goes to the trusted folder)
"""


def main(argv: Sequence[str] | None = None) -> int:
    """``edge-bridge``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["certs"]:
        return certs_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="edge-bridge",
        description="Subscribe to edge-run stations (like any subscriber: the line never waits on it) and serve "
        "their verdicts on OPC UA and Modbus TCP, with Prometheus metrics. Settings come from --config (TOML), "
        "then flags. 'edge-bridge certs --help' makes OPC UA certificates.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="bridge TOML file")
    from edge.bridge.config import add_station_flags, setting_fields
    from edge.settings import add_flags, given

    add_station_flags(parser, "that station's control endpoint: OPC UA and Modbus clients may then switch its recipe")
    add_flags(parser, ((key, spec) for key, (_, spec) in setting_fields().items()))
    parser.add_argument("--verbose", action="store_true", help="log every connection and snapshot")
    args = parser.parse_args(argv)
    if (refused := missing_extra("edge-bridge", "bridge", LIBRARIES)) is not None:
        return refused
    logging.basicConfig(level=logging.INFO, format="edge-bridge: %(message)s")
    for noisy in ("asyncua", "pymodbus"):
        logging.getLogger(noisy).setLevel(logging.INFO if args.verbose else logging.ERROR)
    from edge.bridge.config import BridgeConfig, ConfigError, station_links
    from edge.bridge.service import Bridge, BridgeError

    def body() -> int:
        stations = station_links(args)
        overrides = given(args, setting_fields())
        config = BridgeConfig.load(args.config, overrides, stations)
        return asyncio.run(_serve(Bridge(config)))

    return run_tool("edge-bridge", body, (ConfigError, BridgeError))


async def _serve(bridge) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await bridge.run(stop)
    return 0


def certs_main(argv: Sequence[str] | None = None) -> int:
    """``edge-bridge certs``: a self-signed OPC UA application certificate (DER) and its private key (PEM)."""
    parser = argparse.ArgumentParser(
        prog="edge-bridge certs",
        description="Make an OPC UA application certificate (NAME.der, give it to the other side) and its private "
        "key (NAME.pem, readable by its owner only), valid for --days, for Basic256Sha256. The bridge runs with "
        "--opcua-certificate bridge.der --opcua-private-key bridge.pem --opcua-trusted DIR, where DIR holds the "
        "clients' .der files; clients trust bridge.der.",
    )
    parser.add_argument("--out", required=True, type=Path, help="folder for the two files")
    parser.add_argument("--name", required=True, help="e.g. bridge, or the client's name (scada, plc1)")
    parser.add_argument("--client", action="store_true", help="a client's certificate (default: the bridge's)")
    parser.add_argument("--uri", help="application URI (default urn:edge-inspect:bridge, or urn:edge-inspect:NAME)")
    parser.add_argument("--host", default=socket.gethostname(), help="host name in the certificate (default: this)")
    parser.add_argument("--days", type=int, default=730)
    args = parser.parse_args(argv)
    if (refused := missing_extra("edge-bridge", "bridge", ("asyncua",))) is not None:
        return refused
    from edge.bridge.certs import make_certificate

    uri = args.uri or ("urn:edge-inspect:bridge" if not args.client else f"urn:edge-inspect:{args.name}")

    def body() -> int:
        try:
            certificate, key = make_certificate(args.out, args.name, uri, args.host, args.client, args.days)
        except OSError as exc:
            raise ToolError(f"cannot write to {args.out}: {exc.strerror}") from exc
        print(f"wrote {certificate} (certificate, application URI {uri}) and {key} (private key)")
        return 0

    return run_tool("edge-bridge", body)
