"""Watching the good-score distribution on the line against what calibration saw.

Calibration stores the mean and standard deviation of the good images' logit scores. On the line the scores of
passed parts are kept in a window; when the window's mean moves more than ``limit`` reference standard deviations
(and more than chance allows for the window's size), the station reports drift on its status topic: lighting,
focus, a new batch of material. Passed parts only: failures would bias the estimate, and a drift toward higher
scores shows in the passes long before parts fail.
"""

from __future__ import annotations

import math
from collections import deque


class DriftMonitor:
    """Rolling window of passed parts' logit scores compared with calibration's."""

    def __init__(self, mean: float, std: float, window: int = 500, limit: float = 1.0, check_every: int = 50):
        self.mean, self.std = mean, max(std, 1e-6)
        self.window: deque[float] = deque(maxlen=window)
        self.limit, self.check_every = limit, check_every
        self.drifting = False
        self._since_check = 0

    @classmethod
    def from_calibration(cls, calibration: dict | None) -> DriftMonitor | None:
        if not calibration or "good_logit_mean" not in calibration:
            return None
        return cls(calibration["good_logit_mean"], calibration["good_logit_std"])

    def add(self, score: float) -> dict | None:
        """Record a passed part's score; returns a drift report when the state changes."""
        clipped = min(max(score, 1e-7), 1 - 1e-7)
        self.window.append(math.log(clipped / (1 - clipped)))
        self._since_check += 1
        if self._since_check < self.check_every or len(self.window) < self.check_every:
            return None
        self._since_check = 0
        n = len(self.window)
        shift = (sum(self.window) / n - self.mean) / self.std
        chance = 3.0 / math.sqrt(n)  # three standard errors of the window mean, in reference units
        drifting = abs(shift) > max(self.limit, chance)
        if drifting == self.drifting:
            return None
        self.drifting = drifting
        return {"drift": drifting, "shift_std": round(shift, 3), "window": n}
