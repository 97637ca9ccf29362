"""Modbus TCP (pymodbus): each station is a unit (``modbus_unit``: 1, 2, … in the order given) with this map of
holding registers (0-based addresses; 40001 + address in the classic notation; 32-bit values high word first):

====  ===========  =====  ===================================================================================
addr  name         words  meaning
====  ===========  =====  ===================================================================================
0     NewResult    1      1: a result waits for the PLC's acknowledge; 0: none
1     Acknowledge  1      the PLC writes ResultId here once it has read the result (the one writable register)
2     ResultId     1      handshake number of the presented result: 1…65535, then 1 again
3     Verdict      1      0 none yet, 1 pass, 2 fail, 3 error
4     Reason       1      error reason code (:data:`REASON_CODES`); 0 for pass and fail
5     Seq          2      the verdict's seq (per station run, from 0)
7     FrameId      2      the camera's frame id, signed (-1: a part the camera made no frame of)
9     Score        1      score × 10,000 (0…10,000); 65535: no score (error verdicts)
10    Threshold    1      the threshold the verdict was judged with, × 10,000
11    QueueDepth   1      results waiting behind the presented one
12    Overflow     2      results dropped because the queue was full (since the bridge started)
14    State        1      0 offline, 1 running, 2 degraded, 3 stalled
15    Passed       2      the station's counters for its current run …
17    Failed       2
19    Errors       2
21    Missed       2      … and the verdicts of this run the bridge never received (gaps in seq)
23    Alive        1      counts up once a second while the bridge runs (wraps after 65535)
24    RecipeNumber  1     the PLC writes the number of the recipe it wants (the recipe file's ``number``)
25    RecipeRequest 1     … then a new request number here (1…65535, not the last one): the switch is asked for
26    RecipeDone    1     the RecipeRequest the bridge has answered
27    RecipeResult  1     its answer: 0 none yet, 1 busy (loading), 2 armed (in force from the next frame), 3 refused
28    ActiveRecipe  1     the number of the recipe in force (0: the station runs one engine, or the recipe has none)
====  ===========  =====  ===================================================================================

The handshake: the bridge presents a result (the result registers, ResultId + 1, NewResult = 1); the PLC reads
it and writes that ResultId to Acknowledge; the bridge clears NewResult and presents the next result at once if
one is waiting. Results that arrive before the acknowledge wait in order in a bounded queue; when it is full a
new result is dropped and counted in Overflow (the PLC also sees the jump in Seq), so no result is ever
overwritten unseen. Acknowledging an older ResultId is refused with exception 03 (illegal data value); repeating
the current one is harmless. Writing any register but Acknowledge is refused with exception 02 (illegal data
address). The counters and State are live; the result registers hold the presented (or last) result.

A recipe switch (stations the bridge has a ``control`` link to): the PLC writes RecipeNumber and a new
RecipeRequest (in one write of two registers, or the number first), waits until RecipeDone equals its request,
then reads RecipeResult; ActiveRecipe follows once the switch is in force (from the station's status). A request
while one is busy is refused with exception 06 (device busy); repeating the current request is harmless. The
station's log and status topic say why a switch was refused.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from dataclasses import dataclass, field

from edge.bridge import bind_error
from edge.bridge.outputs import OutputError, OutputKind, register_output
from edge.bridge.station import StationView
from edge.config import ConfigError
from edge.metrics import listen_address

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
except ImportError:  # the bridge extra; edge-bridge names what to install
    CounterMetricFamily = GaugeMetricFamily = None

try:
    from pymodbus.constants import ExcCodes
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice
except ImportError:  # the bridge extra; edge-bridge names what to install
    ModbusTcpServer = None

log = logging.getLogger(__name__)

NEW_RESULT, ACKNOWLEDGE, RESULT_ID, VERDICT, REASON, SEQ, FRAME_ID, SCORE, THRESHOLD = 0, 1, 2, 3, 4, 5, 7, 9, 10
QUEUE_DEPTH, OVERFLOW, STATE, PASSED, FAILED, ERRORS, MISSED, ALIVE = 11, 12, 14, 15, 17, 19, 21, 23
RECIPE_NUMBER, RECIPE_REQUEST, RECIPE_DONE, RECIPE_RESULT, ACTIVE_RECIPE = 24, 25, 26, 27, 28
REGISTER_COUNT = 29
RECIPE_BUSY, RECIPE_ARMED, RECIPE_REFUSED = 1, 2, 3
VERDICT_CODES = {"pass": 1, "fail": 2, "error": 3}
STATE_CODES = {"offline": 0, "running": 1, "degraded": 2, "stalled": 3}
REASON_CODES = {
    "unreadable_image": 1,
    "grab_incomplete": 2,
    "trigger_overrun": 3,
    "frame_lost": 4,
    "capture_failed": 5,
    "frame_format": 6,
    "overrun": 7,
    "paused": 8,
    "engine_error": 9,
    "invalid_output": 10,
    "deadline": 11,
}
OTHER_REASON = 99
NO_SCORE = 65535


class ModbusError(OutputError):
    """The Modbus server cannot start; the message says why."""


def _words(value: int) -> list[int]:
    """A 32-bit register pair, high word first (negative values as two's complement)."""
    value %= 1 << 32
    return [value >> 16, value & 0xFFFF]


def _fixed(value) -> int:
    """A score in [0, 1] × 10,000; NO_SCORE when absent or not finite."""
    if value is None or not math.isfinite(value):
        return NO_SCORE
    return min(max(round(value * 10000), 0), NO_SCORE - 1)


class StationRegisters:
    """One station's register image, result queue and handshake."""

    def __init__(self, view: StationView, queue_size: int, on_present=None) -> None:
        self.view, self.on_present = view, on_present
        self.image = [0] * REGISTER_COUNT
        self.waiting: deque[dict] = deque()
        self.queue_size = queue_size
        self.overflow = 0
        self.refused = 0  # acknowledges of a ResultId that was not presented
        self.presented = 0
        self._switch: asyncio.Task | None = None  # the recipe switch being asked for

    def verdict(self, verdict: dict) -> None:
        """A new verdict: presented at once if nothing waits for the PLC, else queued (or dropped when full)."""
        if not self.image[NEW_RESULT]:
            self._present(verdict)
        elif len(self.waiting) < self.queue_size:
            self.waiting.append(verdict)
        else:
            self.overflow += 1
            log.warning("%s: Modbus queue full (%d): seq %s dropped", self.view.name, self.queue_size, verdict["seq"])
        self.refresh()

    def acknowledge(self, result_id: int):
        """The PLC wrote Acknowledge; returns a Modbus exception code when refused, else None."""
        if result_id != 0 and result_id != self.image[RESULT_ID]:
            self.refused += 1
            return ExcCodes.ILLEGAL_VALUE
        self.image[ACKNOWLEDGE] = result_id
        if result_id and self.image[NEW_RESULT]:
            self.image[NEW_RESULT] = 0
            if self.waiting:
                self._present(self.waiting.popleft())
            self.refresh()
        return None

    def _present(self, verdict: dict) -> None:
        image = self.image
        image[RESULT_ID] = image[RESULT_ID] % 65535 + 1
        image[VERDICT] = VERDICT_CODES[verdict["verdict"]]
        reason = verdict.get("reason")
        image[REASON] = REASON_CODES.get(reason, OTHER_REASON) if reason else 0
        image[SEQ : SEQ + 2] = _words(verdict["seq"])
        image[FRAME_ID : FRAME_ID + 2] = _words(verdict["frame_id"])
        image[SCORE] = _fixed(verdict.get("score"))
        image[THRESHOLD] = _fixed(verdict.get("threshold"))
        image[NEW_RESULT] = 1
        self.presented += 1
        if self.on_present is not None:
            self.on_present(verdict)

    def refresh(self) -> None:
        """Copy the view's live values (state, counters) and the queue into the image."""
        view, image = self.view, self.image
        image[QUEUE_DEPTH] = min(len(self.waiting), 65535)
        image[OVERFLOW : OVERFLOW + 2] = _words(self.overflow)
        image[STATE] = STATE_CODES[view.state]
        counters = ((PASSED, view.passed), (FAILED, view.failed), (ERRORS, view.errors), (MISSED, view.missed))
        for address, value in counters:
            image[address : address + 2] = _words(value)
        image[ACTIVE_RECIPE] = view.recipe_number

    def request_recipe(self, request: int):
        """The PLC wrote RecipeRequest; returns a Modbus exception code when refused, else None."""
        image = self.image
        if request == image[RECIPE_REQUEST] or request == 0:
            return None  # the current request again (or a reset to none): nothing new
        if image[RECIPE_RESULT] == RECIPE_BUSY:
            return ExcCodes.DEVICE_BUSY
        image[RECIPE_REQUEST], image[RECIPE_RESULT] = request, RECIPE_BUSY
        self._switch = asyncio.get_running_loop().create_task(self._set_recipe(request, image[RECIPE_NUMBER]))
        return None

    async def _set_recipe(self, request: int, number: int) -> None:
        view = self.view
        if view.control is None:
            answer = {"ok": False, "error": "the bridge has no control link to it (edge-bridge --control NAME=…)"}
        elif not number:
            answer = {"ok": False, "error": "RecipeNumber is 0: write the recipe's number first"}
        else:
            command = {"command": "set_recipe", "number": number}
            answer = await asyncio.get_running_loop().run_in_executor(None, view.control, command)
        ok = bool(answer.get("ok"))
        log.log(
            logging.INFO if ok else logging.WARNING,
            "%s: Modbus recipe request %d (number %d): %s",
            view.name, request, number, "armed" if ok else answer.get("error"),
        )  # fmt: skip
        self.image[RECIPE_RESULT] = RECIPE_ARMED if ok else RECIPE_REFUSED
        self.image[RECIPE_DONE] = request

    def tick(self) -> None:
        """Once a second: the Alive counter."""
        self.image[ALIVE] = (self.image[ALIVE] + 1) % 65536

    async def access(self, function_code, start_address, address, count, registers, values):
        """pymodbus calls this on every request to the unit before serving it: an acknowledge is handled, then the
        current image is copied into the unit's registers."""
        if values is not None:  # a write: read-only registers were refused before this point
            written = dict(zip(range(address, address + len(values)), map(int, values), strict=True))
            if not set(written) <= {ACKNOWLEDGE, RECIPE_NUMBER, RECIPE_REQUEST}:
                return ExcCodes.ILLEGAL_ADDRESS
            if ACKNOWLEDGE in written and (refused := self.acknowledge(written[ACKNOWLEDGE])) is not None:
                return refused
            if RECIPE_NUMBER in written:
                self.image[RECIPE_NUMBER] = written[RECIPE_NUMBER]
            if RECIPE_REQUEST in written and (refused := self.request_recipe(written[RECIPE_REQUEST])) is not None:
                return refused
        registers[:REGISTER_COUNT] = self.image  # the unit's block starts at address 0
        return None


@dataclass
class ModbusSettings:
    """``modbus = …`` and ``modbus_*`` in ``[bridge]``; ``--modbus`` and ``--modbus-*`` flags."""

    address: str = field(default="0.0.0.0:502", metadata={"help": "Modbus TCP HOST:PORT, or off"})
    queue: int = field(
        default=32,
        metadata={"help": "results waiting for the PLC's acknowledge; beyond it they are dropped and counted"},
    )

    def check(self) -> None:
        try:
            listen_address(self.address)
        except ValueError as exc:
            raise ConfigError(f"modbus = {exc}") from exc
        if self.queue <= 0:
            raise ConfigError(f"setting 'modbus_queue' must be positive, got {self.queue}")


class ModbusOutput:
    """The Modbus TCP server for all stations."""

    name = "modbus"

    def __init__(self, address: tuple[str, int], views: list[StationView], queue_size: int, metrics=None) -> None:
        self.address = address
        self._clients = 0
        self.metrics = metrics
        self.stations = {view.name: StationRegisters(view, queue_size, self._presented) for view in views}
        self._server = None

    def _presented(self, verdict: dict) -> None:
        if self.metrics is not None:
            self.metrics.written("modbus", verdict["t_publish_ns"])

    def _connection(self, connected: bool) -> None:
        self._clients += 1 if connected else -1

    def clients(self) -> int:
        """Connected Modbus clients."""
        return self._clients

    async def start(self) -> None:
        host, port = self.address
        if reason := bind_error(host, port):
            raise ModbusError(f"cannot serve Modbus on {host}:{port}: {reason}")
        devices = []
        for registers in self.stations.values():
            simdata = [
                SimData(NEW_RESULT, values=0, datatype=DataType.REGISTERS, readonly=True),
                SimData(ACKNOWLEDGE, values=0, datatype=DataType.REGISTERS),
                SimData(RESULT_ID, count=RECIPE_NUMBER - RESULT_ID, datatype=DataType.REGISTERS, readonly=True),
                SimData(RECIPE_NUMBER, count=2, values=0, datatype=DataType.REGISTERS),
                SimData(RECIPE_DONE, count=REGISTER_COUNT - RECIPE_DONE, datatype=DataType.REGISTERS, readonly=True),
            ]
            registers.refresh()
            devices.append(SimDevice(id=registers.view.modbus_unit, simdata=simdata, action=registers.access))
        self._server = ModbusTcpServer(devices, address=(host, port), trace_connect=self._connection)
        try:
            await self._server.serve_forever(background=True)
        except RuntimeError as exc:
            raise ModbusError(f"cannot serve Modbus on {host}:{port}: {exc}") from exc
        units = ", ".join(f"unit {registers.view.modbus_unit} = {name}" for name, registers in self.stations.items())
        log.info("Modbus TCP on %s:%d: %s", host, port, units)

    async def verdict(self, view: StationView) -> None:
        self.stations[view.name].verdict(view.last)

    async def current(self, view: StationView) -> None:
        """A snapshot's values are not a new result for the PLC: only the live registers change."""
        self.stations[view.name].refresh()

    async def status(self, view: StationView) -> None:
        self.stations[view.name].refresh()

    def tick(self) -> None:
        """The Alive counter."""
        for registers in self.stations.values():
            registers.tick()

    def metric_families(self) -> list:
        depth = GaugeMetricFamily("edge_bridge_modbus_queue_depth", "Results waiting for the PLC", labels=["station"])
        overflow = CounterMetricFamily("edge_bridge_modbus_overflow", "Results dropped: queue full", labels=["station"])
        refused = CounterMetricFamily(
            "edge_bridge_modbus_refused", "Acknowledges of a result not presented", labels=["station"]
        )
        for name, registers in self.stations.items():
            depth.add_metric([name], len(registers.waiting))
            overflow.add_metric([name], registers.overflow)
            refused.add_metric([name], registers.refused)
        return [depth, overflow, refused]

    def station_summary(self, station: str) -> str:
        registers = self.stations[station]
        return f"Modbus: {registers.presented} presented, overflow {registers.overflow}"

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()


register_output(
    OutputKind(
        name="modbus",
        summary="Modbus TCP server: one unit per station, NewResult/Acknowledge handshake",
        settings=ModbusSettings,
        build=lambda settings, views, metrics: ModbusOutput(
            listen_address(settings.address), views, settings.queue, metrics
        ),
    )
)
