"""A stand-in plant for checking a bridge: an OPC UA client and a Modbus PLC that count what they receive.

    python -m edge.bridge.probe --station demo --opcua opc.tcp://127.0.0.1:4840/edge/ --modbus 127.0.0.1:5020 \\
        --expect 90

The OPC UA client subscribes to the station's ``Seq``, ``Verdict`` and ``Score`` (every change queued, triggered
on the timestamp too, so equal values in a row are still reported) and groups them by their SourceTimestamp:
one group per verdict. The Modbus PLC polls the unit's registers, and whenever ``NewResult`` is 1 reads the
result and writes its ``ResultId`` to ``Acknowledge`` (after ``--ack-delay`` seconds, to play a slow PLC).
Each side checks that the seq it saw runs without gaps or repeats. It waits for the bridge to listen, stops
when both have ``--expect`` results (and a short grace for any extra) or at ``--timeout``, prints one JSON summary
and exits 0 only if each protocol received exactly ``--expect`` verdicts in order (1 otherwise, 2 when it could
not connect).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from edge.bridge import LIBRARIES
from edge.bridge.modbus import (
    ACKNOWLEDGE,
    ACTIVE_RECIPE,
    NEW_RESULT,
    NO_SCORE,
    OVERFLOW,
    QUEUE_DEPTH,
    RECIPE_DONE,
    RECIPE_NUMBER,
    RECIPE_REQUEST,
    RECIPE_RESULT,
    REGISTER_COUNT,
    RESULT_ID,
    SCORE,
    SEQ,
    VERDICT,
    VERDICT_CODES,
)
from edge.bridge.opcua import NAMESPACE, certificate_uri
from edge.tool import ToolError, missing_extra, run_tool

try:
    from asyncua import Client, ua
    from asyncua.crypto import uacrypto
    from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
    from pymodbus.client import AsyncModbusTcpClient
except ImportError:  # the bridge extra; main names what to install
    Client = None

VERDICT_NAMES = {code: name for name, code in VERDICT_CODES.items()}


@dataclass
class Seen:
    """One result as a client saw it (times: ``time.time_ns``)."""

    seq: int
    verdict: str
    score: float | None
    seen_ns: int
    published_ns: int | None = None  # the station's publish time (OPC UA SourceTimestamp)
    written_ns: int | None = None  # when the bridge wrote it (OPC UA ServerTimestamp)


def _ns(moment) -> int | None:
    return int(moment.timestamp() * 1e9) if moment is not None else None


class OpcuaProbe:
    """An OPC UA client following one station's verdicts."""

    FIELDS = ("Seq", "Verdict", "Score")

    def __init__(
        self,
        url: str,
        station: str,
        certificate: Path | None = None,
        private_key: Path | None = None,
        server_certificate: Path | None = None,
        anonymous: bool = False,
    ) -> None:
        """With ``certificate``/``private_key``: Basic256Sha256 Sign&Encrypt, and the same certificate as the user
        identity unless ``anonymous`` (which a secured bridge refuses)."""
        self.url, self.station = url, station
        self.keys = (certificate, private_key, server_certificate)
        self.anonymous = anonymous
        self.client = None
        self._groups: dict[int, dict] = {}  # SourceTimestamp (ns) → values of one verdict
        self._order: list[int] = []  # SourceTimestamps in the order their Seq arrived
        self._initial: set[str] = set()

    async def start(self) -> None:
        client = self.client = Client(self.url, timeout=10)
        certificate, private_key, server_certificate = self.keys
        if certificate is not None:
            client.application_uri = certificate_uri(await uacrypto.load_certificate(certificate))
            await client.set_security(
                SecurityPolicyBasic256Sha256,
                str(certificate),
                str(private_key),
                server_certificate=str(server_certificate),
                mode=ua.MessageSecurityMode.SignAndEncrypt,
            )
            if not self.anonymous:
                await client.load_client_certificate(str(certificate))
                await client.load_private_key(Path(private_key))
        await client.connect()
        index = await client.get_namespace_index(NAMESPACE)
        self.nodes = {
            name: client.get_node(ua.NodeId(f"{self.station}.{name}", index))
            for name in (*self.FIELDS, "Passed", "Failed", "Errors", "Missed", "State", "Recipe")
        }
        self._index = index
        subscription = await client.create_subscription(10, self)
        requests = []
        self._names = {}
        for handle, name in enumerate(self.FIELDS, start=1):
            parameters = ua.MonitoringParameters()
            parameters.ClientHandle, parameters.QueueSize, parameters.DiscardOldest = handle, 100000, False
            parameters.SamplingInterval = 0
            parameters.Filter = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValueTimestamp)
            request = ua.MonitoredItemCreateRequest()
            request.ItemToMonitor = ua.ReadValueId(NodeId=self.nodes[name].nodeid, AttributeId=ua.AttributeIds.Value)
            request.MonitoringMode = ua.MonitoringMode.Reporting
            request.RequestedParameters = parameters
            requests.append(request)
            self._names[self.nodes[name].nodeid] = name
        for result in await subscription.create_monitored_items(requests):
            if isinstance(result, ua.StatusCode):
                result.check()

    def datachange_notification(self, node, value, data) -> None:
        """asyncua's subscription handler: called for every change, in order."""
        name = self._names[node.nodeid]
        if name not in self._initial:  # the first report is the value at subscription time, not a change
            self._initial.add(name)
            return
        datavalue = data.monitored_item.Value
        if not datavalue.StatusCode.is_good():
            return
        source = _ns(datavalue.SourceTimestamp)
        group = self._groups.setdefault(source, {})
        group[name] = value
        if name == "Seq" and "seen_ns" not in group:
            group["seen_ns"], group["written_ns"] = time.time_ns(), _ns(datavalue.ServerTimestamp)
            self._order.append(source)

    def results(self) -> list[Seen]:
        """The verdicts received, in the order their Seq changed."""
        seen = []
        for source in self._order:
            group = self._groups[source]
            score = group.get("Score")
            score = None if score is None or score != score else float(score)
            verdict, written = group.get("Verdict", "?"), group["written_ns"]
            seen.append(Seen(int(group["Seq"]), verdict, score, group["seen_ns"], source, written))
        return seen

    async def read(self) -> dict:
        """Counters and state as they are now."""
        names = ("Passed", "Failed", "Errors", "Missed", "State", "Recipe")
        values = await self.client.read_values([self.nodes[name] for name in names])
        return dict(zip(names, values, strict=True))

    async def set_recipe(self, name: str) -> tuple[bool, str]:
        """Call the station's SetRecipe method: (ok, message)."""
        station = self.client.get_node(ua.NodeId(self.station, self._index))
        ok, message = await station.call_method(ua.NodeId(f"{self.station}.SetRecipe", self._index), name)
        return ok, message

    async def stop(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.disconnect()


class ModbusPlc:
    """A PLC on one unit: polls, reads each new result, acknowledges it."""

    def __init__(self, host: str, port: int, unit: int = 1, poll_s: float = 0.005, ack_delay_s: float = 0.0) -> None:
        self.host, self.port, self.unit = host, port, unit
        self.poll_s, self.ack_delay_s = poll_s, ack_delay_s
        self.results: list[Seen] = []
        self.max_queue_depth = 0
        self.overflow = 0
        self.client = None

    async def connect(self) -> None:
        self.client = AsyncModbusTcpClient(self.host, port=self.port, timeout=5, retries=1)
        if not await self.client.connect():
            raise ConnectionError(f"no Modbus server at {self.host}:{self.port}")

    async def registers(self) -> list[int]:
        response = await self.client.read_holding_registers(0, count=REGISTER_COUNT, device_id=self.unit)
        if response.isError():
            raise ConnectionError(f"Modbus read refused: {response}")
        return response.registers

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop``; every new result is read and acknowledged."""
        while not stop.is_set():
            image = await self.registers()
            self.max_queue_depth = max(self.max_queue_depth, image[QUEUE_DEPTH])
            self.overflow = (image[OVERFLOW] << 16) | image[OVERFLOW + 1]
            if image[NEW_RESULT]:
                score = None if image[SCORE] == NO_SCORE else image[SCORE] / 10000
                seq = (image[SEQ] << 16) | image[SEQ + 1]
                self.results.append(Seen(seq, VERDICT_NAMES.get(image[VERDICT], "?"), score, time.time_ns()))
                if self.ack_delay_s:
                    await asyncio.sleep(self.ack_delay_s)
                response = await self.client.write_register(ACKNOWLEDGE, image[RESULT_ID], device_id=self.unit)
                if response.isError():
                    raise ConnectionError(f"Modbus acknowledge refused: {response}")
            else:
                await asyncio.sleep(self.poll_s)

    async def set_recipe(self, number: int, timeout_s: float = 30.0) -> tuple[int, int]:
        """The recipe handshake: RecipeNumber and a new RecipeRequest in one write, then RecipeDone awaited;
        returns (RecipeResult, ActiveRecipe) once answered."""
        image = await self.registers()
        request = image[RECIPE_REQUEST] % 65535 + 1
        response = await self.client.write_registers(RECIPE_NUMBER, [number, request], device_id=self.unit)
        if response.isError():
            raise ConnectionError(f"Modbus recipe request refused: {response}")
        deadline = time.monotonic() + timeout_s
        while (image := await self.registers())[RECIPE_DONE] != request:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer to recipe request {request} within {timeout_s:.0f} s")
            await asyncio.sleep(self.poll_s)
        return image[RECIPE_RESULT], image[ACTIVE_RECIPE]

    async def close(self) -> None:
        if self.client is not None:
            self.client.close()


def summarise(results: list[Seen], expect: int | None = None) -> dict:
    """Counts, and whether seq ran without gaps or repeats."""
    seqs = [r.seq for r in results]
    repeated = len(seqs) - len(set(seqs))
    gaps = sum(max(0, b - a - 1) for a, b in zip(seqs, seqs[1:], strict=False))
    in_order = all(b > a for a, b in zip(seqs, seqs[1:], strict=False))
    summary = {
        "verdicts": len(results),
        **{kind: sum(r.verdict == kind for r in results) for kind in ("pass", "fail", "error")},
        "first_seq": seqs[0] if seqs else None,
        "last_seq": seqs[-1] if seqs else None,
        "gaps": gaps,
        "repeated": repeated,
        "in_order": in_order,
    }
    if expect is not None:
        summary["ok"] = len(results) == expect and gaps == 0 and repeated == 0 and in_order
    return summary


async def probe(args: argparse.Namespace) -> dict:
    opcua = OpcuaProbe(args.opcua, args.station, *args.keys) if args.opcua else None
    plc = None
    if args.modbus:
        host, _, port = args.modbus.rpartition(":")
        plc = ModbusPlc(host or "127.0.0.1", int(port), args.unit, ack_delay_s=args.ack_delay)
    stop = asyncio.Event()
    tasks = []
    deadline = time.monotonic() + args.timeout
    try:
        if opcua is not None:
            await _until_connected(opcua.start, deadline)
        if plc is not None:
            await _until_connected(plc.connect, deadline)
            tasks.append(asyncio.create_task(plc.run(stop)))
        if args.ready is not None:
            args.ready.touch()

        def done() -> bool:
            opcua_done = opcua is None or len(opcua.results()) >= args.expect
            return opcua_done and (plc is None or len(plc.results) >= args.expect)

        while time.monotonic() < deadline and not done() and not any(task.done() for task in tasks):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # anything beyond the expected count shows up as too many
    finally:
        stop.set()
        for task in tasks:
            with contextlib.suppress(Exception):
                await task
        if plc is not None:
            await plc.close()
        if opcua is not None:
            await opcua.stop()
    report = {}
    if opcua is not None:
        report["opcua"] = summarise(opcua.results(), args.expect)
    if plc is not None:
        report["modbus"] = summarise(plc.results, args.expect)
    return report


async def _until_connected(connect, deadline: float) -> None:
    """Retry ``connect`` while the bridge is not listening yet (it may start after the probe)."""
    while True:
        try:
            return await connect()
        except (OSError, asyncio.TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edge.bridge.probe", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2]
    )
    parser.add_argument("--station", required=True)
    parser.add_argument("--opcua", help="the bridge's OPC UA endpoint")
    parser.add_argument("--modbus", help="the bridge's Modbus HOST:PORT")
    parser.add_argument("--unit", type=int, default=1, help="the station's Modbus unit (default 1)")
    parser.add_argument("--expect", type=int, required=True, help="verdicts each protocol should deliver")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait at most (default 120)")
    parser.add_argument("--ack-delay", type=float, default=0.0, help="seconds the PLC takes to acknowledge")
    parser.add_argument("--ready", type=Path, help="file to create once subscribed and polling")
    parser.add_argument("--certificate", type=Path, help="client certificate (Basic256Sha256)")
    parser.add_argument("--private-key", type=Path)
    parser.add_argument("--server-certificate", type=Path, help="the bridge's certificate")
    args = parser.parse_args(argv)
    if not (args.opcua or args.modbus):
        parser.error("give --opcua and/or --modbus")
    if (refused := missing_extra("probe", "bridge", LIBRARIES)) is not None:
        return refused
    args.keys = (args.certificate, args.private_key, args.server_certificate)
    logging.getLogger("asyncua").setLevel(logging.ERROR)  # its notes on revised session values are not news here

    def body() -> int:
        try:
            report = asyncio.run(probe(args))
        except (OSError, asyncio.TimeoutError) as exc:
            raise ToolError(str(exc) or f"{type(exc).__name__}: the bridge did not answer in time") from exc
        print(json.dumps(report))
        return 0 if all(side["ok"] for side in report.values()) else 1

    return run_tool("probe", body)


if __name__ == "__main__":
    sys.exit(main())
