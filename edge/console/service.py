"""The console at run time: the fleet's feeds, a poller that asks watched stations for their status and
calibration (over their control links, off the web server's thread), the review folder, and the users."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.console.review import Rejects, Review
from edge.console.stations import ConsoleStation, Fleet
from edge.console.users import Users
from edge.sidecar import ScoreSpec

log = logging.getLogger(__name__)

POLL_S = 2.0  # watched stations' status and calibration are asked for this often
HISTOGRAM_BINS = 24


@dataclass
class ConsoleSettings:
    """What ``edge-console`` serves besides its stations."""

    rejects: dict[str, Path] = field(default_factory=dict)  # station → its reject records folder
    review: Path = Path("review")
    users: Users | None = None  # None: this machine only, no log-in
    gallery: int = 24  # rejects shown


class Console:
    """Everything the page shows, kept current; a context manager (feeds and poller run inside it)."""

    def __init__(self, fleet: Fleet, settings: ConsoleSettings) -> None:
        self.fleet, self.settings = fleet, settings
        self.review = Review(settings.review)
        self.rejects = {name: Rejects(folder) for name, folder in settings.rejects.items()}
        self.status: dict[str, dict] = {}  # station → its last status answer (thresholds, recipes, paused)
        self.estimates: dict[str, dict] = {}  # station → the calibration summary and re-calibration estimate
        self._details: dict[str, tuple[float, dict]] = {}  # station → (when, its page's part): shared by all pages
        self._details_lock = threading.Lock()
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="console-poll", daemon=True)

    def __enter__(self) -> Console:
        self.fleet.__enter__()
        self._poller.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._poller.join(timeout=5)
        self.fleet.__exit__(*exc)

    def station(self, name: str) -> ConsoleStation | None:
        return self.fleet.stations.get(name)

    def detail(self, name: str, make, max_age_s: float) -> dict:
        """The station page's own part, made by ``make(name)`` at most once per ``max_age_s`` however many pages
        show it."""
        with self._details_lock:
            made = self._details.get(name)
            if made is None or time.monotonic() - made[0] >= max_age_s:
                made = (time.monotonic(), make(name))
                self._details[name] = made
            return made[1]

    def _poll(self) -> None:
        while not self._stop.wait(POLL_S):
            for station in self.fleet.all():
                name = station.link.name
                if station.watchers > 0 and station.control is not None:
                    try:
                        self._refresh(name, station)
                    except Exception as exc:  # one station's odd answer must not stop the others' updates
                        log.warning("%s: status not refreshed: %s", name, exc)

    def refresh_now(self, name: str) -> None:
        """After a change from the page: show its effect without waiting for the next poll."""
        station = self.station(name)
        if station is not None and station.control is not None:
            self._refresh(name, station)

    def _refresh(self, name: str, station: ConsoleStation) -> None:
        answer = station.control({"command": "status"})
        if not answer.get("ok"):
            return
        status = answer["status"]
        self.status[name] = status
        model = (status.get("recipe") or {}).get("model")
        calibration = station.calibration_of(model)
        if calibration is not None:
            self.estimates[name] = self._estimate(name, model, calibration)

    def _estimate(self, name: str, model: str, answer: dict) -> dict:
        """The calibration as the threshold control shows it, and what re-calibrating with the false rejects
        marked since would do (the calibration code's own fit)."""
        calibration, score = answer.get("calibration"), ScoreSpec(**answer["score"])
        if not calibration:
            return {"calibrated": None}
        marked = self.review.false_rejects_since(name, model, calibration.get("created"))
        summary = {
            "calibrated": calibration.get("created"),
            "threshold": calibration.get("threshold"),
            "target_false_reject": calibration.get("target_false_reject"),
            "false_rejects_marked": len(marked),
            "histogram": _histogram(calibration.get("good_scores")),
        }
        previous = self.estimates.get(name, {})
        if previous.get("false_rejects_marked") == len(marked) and previous.get("calibrated") == summary["calibrated"]:
            summary["recalibration"] = previous.get("recalibration")
        elif marked and calibration.get("good_scores"):
            from edge.false_rejects import CalibrationError, recalibrated

            scores = [entry["verdict"]["score"] for entry in marked if entry["verdict"].get("score") is not None]
            try:
                summary["recalibration"] = recalibrated(calibration, score, scores)
            except CalibrationError as exc:
                summary["recalibration"] = {"error": str(exc)}
        else:
            summary["recalibration"] = None
        summary["tail"], summary["score"] = calibration.get("tail"), answer["score"]
        summary["good_scores"] = calibration.get("good_scores")
        return summary

    def false_reject_at(self, name: str, threshold: float) -> float | None:
        """The calibration's expected false-reject rate at ``threshold`` (None without a calibration)."""
        estimate = self.estimates.get(name) or {}
        if not estimate.get("tail"):
            return None
        from edge.false_rejects import false_reject_at

        calibration = {"tail": estimate["tail"], "good_scores": estimate.get("good_scores")}
        return false_reject_at(calibration, ScoreSpec(**estimate["score"]), threshold)


def _histogram(scores: list[float] | None) -> dict | None:
    if not scores:
        return None
    counts, edges = np.histogram(np.asarray(scores, np.float64), bins=HISTOGRAM_BINS)
    return {"counts": counts.tolist(), "edges": [float(e) for e in edges]}
