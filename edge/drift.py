"""Watching the good-score distribution on the line against what calibration saw.

Calibration stores the mean and standard deviation of the good images' scores on the sidecar's unbounded z scale
(the logit of a probability, the log of a distance: ``ScoreSpec.to_z``). On the line the scores of passed parts
are kept in a window; when the window's mean moves more than ``limit`` reference standard deviations
(and more than chance allows for the window's size), the station reports drift on its status topic: lighting,
focus, a new batch of material. Passed parts only: failures would bias the estimate, and a drift toward higher
scores shows in the passes long before parts fail.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

from edge.sidecar import ScoreSpec


class DriftMonitor:
    """Rolling window of passed parts' z scores compared with calibration's."""

    def __init__(
        self,
        mean: float,
        std: float,
        score: ScoreSpec | None = None,
        window: int = 500,
        limit: float = 1.0,
        check_every: int = 50,
    ):
        self.mean, self.std = mean, max(std, 1e-6)
        self.score = score or ScoreSpec()
        self.window: deque[float] = deque(maxlen=window)
        self.limit, self.check_every = limit, check_every
        self.drifting = False
        self._since_check = 0

    @classmethod
    def from_calibration(cls, calibration: dict | None, score: ScoreSpec) -> DriftMonitor | None:
        """The watch for a sidecar's calibration (``good_logit_*`` in calibrations made before the z scale)."""
        if not calibration:
            return None
        for prefix in ("good_z", "good_logit"):
            if f"{prefix}_mean" in calibration:
                return cls(calibration[f"{prefix}_mean"], calibration[f"{prefix}_std"], score)
        return None

    def add(self, score: float) -> dict | None:
        """Record a passed part's score; returns a drift report when the state changes."""
        self.window.append(self.score.z_of(score))
        self._since_check += 1
        if self._since_check < self.check_every or len(self.window) < self.check_every:
            return None
        self._since_check = 0
        n = len(self.window)
        shift = self.shift_std()
        chance = 3.0 / math.sqrt(n)  # three standard errors of the window mean, in reference units
        drifting = abs(shift) > max(self.limit, chance)
        if drifting == self.drifting:
            return None
        self.drifting = drifting
        return {"drift": drifting, "shift_std": round(shift, 3), "window": n}

    def shift_std(self) -> float | None:
        """The window's mean minus calibration's, in reference standard deviations; None before any pass."""
        values = list(self.window)  # a copy: the publishing thread appends while metrics read it
        return (sum(values) / len(values) - self.mean) / self.std if values else None


class DriftSink:
    """Feeds passed parts' scores to a :class:`DriftMonitor`; ``on_change(report)`` is called when drift starts or
    ends (the station logs it and publishes it on its status topic). Each recipe is watched against its own
    calibration: the first frame of another recipe starts a new watch (none where it has no calibration)."""

    name, required = "drift", False

    def __init__(self, monitor: DriftMonitor | None, on_change: Callable[[dict], None], recipe=None) -> None:
        self.monitor, self.on_change, self.recipe = monitor, on_change, recipe

    def write(self, verdict: dict, job) -> None:
        if job.recipe is not self.recipe:
            self.recipe = job.recipe
            sidecar = job.recipe.engine.sidecar
            self.monitor = DriftMonitor.from_calibration(sidecar.calibration, sidecar.score)
        if verdict["verdict"] == "pass" and self.monitor is not None:
            change = self.monitor.add(verdict["score"])
            if change:
                self.on_change(change)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
