"""What the bridge knows of one station: its last verdict, counters and state, kept from the events its feed
delivers (:mod:`edge.bridge.feed`). Every output (OPC UA, Modbus) shows this one view.

State follows the station's heartbeat: ``running`` (health ok), ``stalled`` (the station reports degraded:
capture or inference not progressing), ``degraded`` (camera lost, engine errors, paused by an operator), and
``offline`` (no heartbeat for the configured number of intervals, or the run's final status). While offline, and
until the next verdict, the last verdict is kept but marked as not current.

Counters (passed, failed, errors) are the station's: each heartbeat carries them, consistent with the stream up
to that heartbeat, so the view takes them from there and counts the verdicts that follow. ``missed`` counts the
verdicts of this run the bridge could not show: gaps in ``seq``, malformed verdicts included.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

STATE_OF_HEALTH = {"ok": "running", "degraded": "stalled"}  # any other health: degraded
STATES = ("offline", "running", "degraded", "stalled")


@dataclass(frozen=True)
class Received:
    """A message from the station's stream, validated. ``missed``: verdicts lost just before it."""

    kind: str
    payload: dict
    missed: int = 0
    received_ns: int = 0


@dataclass(frozen=True)
class Snapshot:
    """From the station's snapshot socket (a late join, a bridge restart): what happened before the stream the
    bridge receives began. ``counters`` and ``last`` are None where the stream repeats them."""

    run_id: str
    health: str | None
    counters: dict | None
    last: dict | None


@dataclass(frozen=True)
class LinkDown:
    """No heartbeat for too long."""


@dataclass
class StationView:
    name: str
    modbus_unit: int = 1
    run_id: str | None = None
    state: str = "offline"
    health: str = "unknown"
    passed: int = 0
    failed: int = 0
    errors: int = 0
    missed: int = 0
    last: dict | None = None  # the last verdict
    current: bool = False  # False while offline and until the next verdict: the last verdict is not current
    received_ns: int = 0  # when the bridge received the last verdict (time.time_ns)
    recipe: str = ""  # the recipe in force, from heartbeats and status ("" for a station with one engine)
    recipe_number: int = 0  # its PLC number (0: none)
    control: Callable[[dict], dict] | None = None  # sends a control request to the station (blocking), if linked

    def apply(self, event) -> str | None:
        """Take in one event; returns ``"verdict"`` (a new verdict), ``"status"`` (state or counters) or None."""
        if isinstance(event, LinkDown):
            return self._offline() if self.state != "offline" else None
        if isinstance(event, Snapshot):
            self._follow(event.run_id)
            self._set_counters(event.counters)
            self._set_health(event.health)
            if event.last is not None:
                self.last, self.current = event.last, True
                return "verdict"
            return "status"
        payload = event.payload
        self._follow(payload.get("run_id"))
        if event.kind == "verdict":
            self.missed += event.missed
            kind = payload["verdict"]
            self.passed += kind == "pass"
            self.failed += kind == "fail"
            self.errors += kind == "error"
            self.last, self.current, self.received_ns = payload, True, event.received_ns
            if self.state == "offline":  # a verdict is proof of life; the next heartbeat says how healthy
                self.state = "running"
            return "verdict"
        self._set_counters(payload.get("counters"))
        recipe = payload.get("recipe")
        if isinstance(recipe, dict) and isinstance(recipe.get("name"), str | None):
            self.recipe = recipe["name"] or ""
            number = recipe.get("number")
            self.recipe_number = number if isinstance(number, int) and 0 < number < 65536 else 0
        if event.kind == "status" and payload.get("final"):
            return self._offline()
        self._set_health(payload.get("health"))
        return "status"

    def part_id(self) -> str:
        """The last verdict's identity across restarts: ``station/run_id/seq``."""
        return f"{self.name}/{self.last['run_id']}/{self.last['seq']}" if self.last else ""

    def _follow(self, run_id: str | None) -> None:
        """A new run (the station restarted): its counters start from zero."""
        if run_id is not None and run_id != self.run_id:
            self.run_id = run_id
            self.passed = self.failed = self.errors = self.missed = 0

    def _set_counters(self, counters: dict | None) -> None:
        if isinstance(counters, dict) and all(isinstance(counters.get(k), int) for k in ("pass", "fail", "error")):
            self.passed, self.failed, self.errors = counters["pass"], counters["fail"], counters["error"]

    def _set_health(self, health) -> None:
        if isinstance(health, str):
            self.health = health
            self.state = STATE_OF_HEALTH.get(health, "degraded")

    def _offline(self) -> str:
        self.state, self.current = "offline", False
        return "status"
