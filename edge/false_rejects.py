"""False-reject rates from good scores: choosing a threshold for a target rate, and the rate a threshold is
expected to have (``edge-calibrate`` writes calibrations with it; the console estimates from them). scipy is
imported where a tail is fitted (the ``reports`` and ``console`` extras).

Good images only: the image-score threshold for a target false-reject rate p. An empirical quantile at p needs
about 1/p images and says nothing about its own error, so we fit the upper tail: scores are mapped to an
unbounded scale z (the logit of a probability, the log of a distance: the sidecar's ``ScoreSpec.to_z``), the
excesses over the 80th percentile are modelled by a generalised Pareto distribution (peaks over threshold,
fitted by maximum likelihood, shape kept within ±0.5), and the threshold is the tail's (1 − p) quantile.
A bootstrap over the good scores gives the uncertainty of the false-reject rate at that threshold, and a
Clopper–Pearson bound gives what the sample proves without any model. The fit extrapolates at most tenfold
beyond the sample: fewer than ``minimum_good(p)`` images are refused.

With bad images too: the lowest threshold meeting the false-reject target (so the fewest escapes), and for
comparison the F1-optimal and the zero-escape thresholds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from edge.sidecar import ScoreSpec

TAIL_FRACTION = 0.2  # the top 20 % of good scores form the tail
SHAPE_LIMIT = 0.5  # the fitted tail shape is kept within ±0.5
EXTRAPOLATION = 10.0  # the fit may reach p down to 1 / (10 n)
CONFIDENCE = 0.95
EPS = 1e-7


class CalibrationError(Exception):
    """Scores that cannot support the requested calibration; the message says what is needed."""


def minimum_good(target: float) -> int:
    """Good images needed for a false-reject target (at least 30)."""
    return max(30, math.ceil(1.0 / (EXTRAPOLATION * target)))


def beta_ppf(q: float, a: float, b: float) -> float:
    """Quantile of the Beta(a, b) distribution (bisection on the regularised incomplete beta)."""
    from scipy.special import betaincinv

    return float(betaincinv(a, b, q))


def clopper_pearson_upper(exceedances: int, n: int, confidence: float = CONFIDENCE) -> float:
    """One-sided upper confidence bound of a rate from ``exceedances`` out of ``n``."""
    if exceedances >= n:
        return 1.0
    return beta_ppf(confidence, exceedances + 1, n - exceedances)


@dataclass(frozen=True)
class TailFit:
    """Generalised Pareto tail over ``threshold`` of z scores: P(z > u + x) = fraction · (1 + ξx/σ)^(−1/ξ)."""

    threshold: float
    fraction: float
    shape: float
    scale: float

    @classmethod
    def fit(cls, good_z: np.ndarray) -> TailFit:
        """Fit the tail of good images' z scores."""
        from scipy.stats import genpareto

        z = np.sort(np.asarray(good_z, np.float64))
        u = float(np.quantile(z, 1 - TAIL_FRACTION))
        excess = z[z > u] - u
        if len(excess) < 3 or float(excess.std()) < 1e-9:
            return cls(u, max(len(excess), 1) / len(z), 0.0, max(float(excess.mean()) if len(excess) else 0.0, 1e-6))
        shape, _, scale = genpareto.fit(excess, floc=0)
        return cls(u, len(excess) / len(z), float(np.clip(shape, -SHAPE_LIMIT, SHAPE_LIMIT)), max(float(scale), 1e-6))

    def quantile(self, rate: float) -> float:
        """z score exceeded with probability ``rate``."""
        ratio = self.fraction / rate
        if abs(self.shape) < 1e-6:
            return self.threshold + self.scale * math.log(ratio)
        return self.threshold + self.scale / self.shape * (ratio**self.shape - 1)

    def exceedance(self, z: float) -> float:
        """P(z score ≥ z) for z above the tail threshold."""
        x = z - self.threshold
        if abs(self.shape) < 1e-6:
            return self.fraction * math.exp(-x / self.scale)
        base = 1 + self.shape * x / self.scale
        return self.fraction * base ** (-1 / self.shape) if base > 0 else 0.0


def false_reject_threshold(
    good: np.ndarray, target: float, rng: np.random.Generator, score: ScoreSpec | None = None, resamples: int = 300
) -> dict:
    """The threshold for ``target`` false rejects, with its uncertainty (``score`` says what the scores are;
    probabilities by default)."""
    score = score or ScoreSpec()
    good = np.asarray(good, np.float64)
    n = len(good)
    if not 0 < target < TAIL_FRACTION:
        raise CalibrationError(f"--target-false-reject {target}: give a rate between 0 and {TAIL_FRACTION}")
    if n < minimum_good(target):
        raise CalibrationError(
            f"{n} good images cannot support a false-reject target of {target:g}: at least {minimum_good(target)} "
            f"are needed (the tail fit extrapolates at most {EXTRAPOLATION:g}× beyond the sample); add good images "
            f"or raise --target-false-reject to {1 / (EXTRAPOLATION * n):.2g} or more"
        )
    good_z = score.to_z(good)
    fit = TailFit.fit(good_z)
    z = fit.quantile(target)
    threshold = score.from_z(z)
    boot = []
    for _ in range(resamples):
        sample = rng.choice(good_z, size=n, replace=True)
        refit = TailFit.fit(sample)
        boot.append(refit.exceedance(z) if z > refit.threshold else float(np.mean(sample >= z)))
    exceed = int((good >= threshold).sum())
    return {
        "threshold": threshold,
        "target_false_reject": target,
        "expected_false_reject": target,
        "false_reject_interval": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
        "observed_false_reject": exceed / n,
        "proven_false_reject_upper": clopper_pearson_upper(exceed, n),
        "good_images": n,
        "tail": asdict(fit),
    }


def false_reject_at(calibration: dict, score: ScoreSpec, threshold: float) -> float | None:
    """The false-reject rate a calibration expects at ``threshold``: its fitted tail above the tail's start, else
    the share of its good scores at or above it (None where the calibration kept no scores)."""
    tail = TailFit(**calibration["tail"])
    z = score.z_of(threshold)
    if z > tail.threshold:
        return tail.exceedance(z)
    good = calibration.get("good_scores")
    return float(np.mean(np.asarray(good) >= threshold)) if good else None


def recalibrated(calibration: dict, score: ScoreSpec, more_good: list[float], seed: int = 0) -> dict:
    """What calibrating again with ``more_good`` added to the calibration's good scores (false rejects an operator
    marked good) would give: the new threshold for the same target, and the false-reject rate the current one
    would then be expected to have."""
    good = np.concatenate([np.asarray(calibration["good_scores"], np.float64), np.asarray(more_good, np.float64)])
    target = calibration["target_false_reject"]
    result = false_reject_threshold(good, target, np.random.default_rng(seed), score, resamples=50)
    current = {**result, "good_scores": good.tolist()}
    return {
        "good_images": len(good),
        "threshold": result["threshold"],
        "target_false_reject": target,
        "current_threshold": calibration["threshold"],
        "current_false_reject": false_reject_at(current, score, calibration["threshold"]),
    }


def with_bad_images(good: np.ndarray, bad: np.ndarray, chosen: float) -> dict:
    """Escape rate at the chosen threshold, and the F1-optimal and zero-escape thresholds for comparison."""
    good, bad = np.asarray(good, np.float64), np.asarray(bad, np.float64)
    candidates = np.unique(np.concatenate([good, bad]))
    tp = (bad[None, :] >= candidates[:, None]).sum(1)
    fp = (good[None, :] >= candidates[:, None]).sum(1)
    f1 = 2 * tp / np.maximum(2 * tp + fp + (len(bad) - tp), 1)
    best = int(np.argmax(f1))
    zero_escape = float(bad.min())

    def rates(t: float) -> dict:
        return {
            "threshold": t,
            "false_reject": float((good >= t).mean()),
            "escape": float((bad < t).mean()),
        }

    return {
        "bad_images": len(bad),
        "escape_at_threshold": float((bad < chosen).mean()),
        "escapes_at_threshold": int((bad < chosen).sum()),
        "f1_optimal": {**rates(float(candidates[best])), "f1": float(f1[best])},
        "zero_escape": rates(zero_escape),
    }


def pixel_threshold(good_map_maxima: np.ndarray, image_threshold: float, bounded: bool = True) -> float:
    """Region threshold: the highest pixel of any good calibration image (no region shows on a good part), but
    not below half the image threshold (nor above 1 for probability maps)."""
    level = float(np.max(good_map_maxima)) if len(good_map_maxima) else image_threshold
    level = max(level, 0.5 * image_threshold)
    return float(min(level, 1.0)) if bounded else level
