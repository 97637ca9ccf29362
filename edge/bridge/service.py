"""The bridge at run time: one feed thread per station, one asyncio loop that applies their events to the
station views in order and updates the outputs (each registered one that is on: :mod:`edge.bridge.outputs`), and
the metrics endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from edge.bridge.config import BridgeConfig
from edge.bridge.feed import StationFeed
from edge.bridge.metrics import BridgeMetrics
from edge.bridge.outputs import Output, OutputError, output_kinds
from edge.bridge.station import Snapshot, StationView
from edge.metrics import MetricsError
from edge.security import SecurityError
from edge.systemd import notify

log = logging.getLogger(__name__)


class BridgeError(Exception):
    """The bridge cannot start; the message says why."""


class Bridge:
    """Owns the views, outputs, feeds and metrics of one ``edge-bridge`` run."""

    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        self.views = {
            link.name: StationView(link.name, link.modbus_unit, control=link.sender()) for link in config.stations
        }
        self.metrics = BridgeMetrics()
        views, kinds = list(self.views.values()), output_kinds()
        self.outputs: list[Output] = [
            kinds[name].build(settings, views, self.metrics) for name, settings in config.served().items()
        ]
        self.feeds: list[StationFeed] = []

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def deliver(station: str, event) -> None:  # from the feeds' threads
            loop.call_soon_threadsafe(events.put_nowait, (station, event))

        started = []
        try:
            try:
                for output in self.outputs:
                    await output.start()
                    started.append(output)
                self.metrics.watch(list(self.views.values()), self.outputs)
                if self.config.metrics is not None:  # once every output's families are there: no partial scrape
                    self.metrics.serve(self.config.metrics)
                for link in self.config.stations:
                    feed = StationFeed(link, deliver, self.config.offline_heartbeats, self.metrics)
                    self.feeds.append(feed)
                    feed.start()
            except (OutputError, MetricsError, SecurityError) as exc:
                raise BridgeError(str(exc)) from exc
            notify("READY=1\nSTATUS=edge-bridge: " + ", ".join(self.views))
            ticker = asyncio.create_task(self._tick(stop))
            while not stop.is_set():
                try:
                    station, event = await asyncio.wait_for(events.get(), timeout=0.2)
                except asyncio.TimeoutError:
                    continue
                await self._apply(self.views[station], event)
            await ticker
        finally:
            notify("STOPPING=1")
            for feed in self.feeds:
                feed.stop()
            for output in started:
                await output.stop()
            self.metrics.close()
            self._summary()

    async def _apply(self, view: StationView, event) -> None:
        change = view.apply(event)
        if change == "verdict" and isinstance(event, Snapshot):  # the station's current values, not a new result
            for output in self.outputs:
                await output.current(view)
        elif change == "verdict":
            for output in self.outputs:
                await output.verdict(view)
        elif change == "status":
            for output in self.outputs:
                await output.status(view)

    async def _tick(self, stop: asyncio.Event) -> None:
        """Once a second: the outputs' ticks (Modbus: the Alive counter) and the service watchdog."""
        while not stop.is_set():
            for output in self.outputs:
                output.tick()
            notify("WATCHDOG=1")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)

    def _summary(self) -> None:
        for feed in self.feeds:
            view = self.views[feed.link.name]
            outputs = "".join(f"; {said}" for output in self.outputs if (said := output.station_summary(view.name)))
            log.info(
                "%s: state %s, last seq %s, passed %d, failed %d, errors %d, missed %d, malformed %d%s",
                view.name,
                view.state,
                view.last["seq"] if view.last else "-",
                view.passed,
                view.failed,
                view.errors,
                view.missed,
                feed.malformed,
                outputs,
            )
        for protocol, summary in self.metrics.latency_summary().items():
            log.info("%s: station publish → written p50 %s ms, p99 %s ms", protocol, summary["p50"], summary["p99"])
