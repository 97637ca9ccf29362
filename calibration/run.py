"""``edge-calibrate``: score good (and bad) images with an engine, choose thresholds, write them into the
engine's sidecar (atomically, bound to its sha256, the previous calibration kept as history) and a report."""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.engines import Engine, open_engine
from edge.false_rejects import (
    CalibrationError,
    false_reject_threshold,
    pixel_threshold,
    with_bad_images,
)
from edge.frames import camera_frame
from edge.sidecar import read_sidecar, write_sidecar
from edge.sources import IMAGE_SUFFIXES

log = logging.getLogger(__name__)


@dataclass
class Scored:
    """Scores of one image set, with small copies of the images and maps for the report."""

    paths: list[Path]
    scores: np.ndarray
    map_maxima: np.ndarray
    thumbnails: dict[int, tuple[np.ndarray, np.ndarray]]  # index → (RGB image, map) for the extreme scores


def image_paths(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"image folder not found: {folder}")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise CalibrationError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return paths


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise CalibrationError(f"cannot read image {path}: replace or remove it")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def score_images(engine: Engine, folder: Path, keep: int = 6, highest: bool = True) -> Scored:
    """Run the engine over every image under ``folder``; refuse wrong sizes and NaN outputs, naming files."""
    paths = image_paths(folder)
    scores, maxima, frames_kept = [], [], {}
    step = engine.frame.max_batch
    for start in range(0, len(paths), step):
        chunk = paths[start : start + step]
        images = [_read_rgb(p) for p in chunk]
        try:
            frames = np.stack([camera_frame(image, engine.frame) for image in images])
        except ValueError as exc:
            bad = next(p for p, i in zip(chunk, images, strict=True) if _wrong_size(i, engine))
            raise CalibrationError(f"{bad}: {exc}") from exc
        out = engine.infer(frames)
        maps = out.anomaly_map.astype(np.float32)
        for j, path in enumerate(chunk):
            if not np.isfinite(out.score[j]) or not np.isfinite(maps[j]).all():
                raise CalibrationError(
                    f"the engine outputs NaN or Inf on {path}: it cannot be calibrated (or trusted) as it is; "
                    "export it again, in FP32 if an FP16 export misbehaves, and check it with edge-verify"
                )
            scores.append(float(out.score[j]))
            maxima.append(float(maps[j].max()))
            frames_kept[start + j] = (images[j], maps[j, 0])
        order = np.argsort(scores)
        wanted = set((order[::-1] if highest else order)[:keep].tolist())
        frames_kept = {k: v for k, v in frames_kept.items() if k in wanted}
    return Scored(paths, np.asarray(scores), np.asarray(maxima), frames_kept)


def _wrong_size(image: np.ndarray, engine: Engine) -> bool:
    try:
        camera_frame(image, engine.frame)
    except ValueError:
        return True
    return False


def calibrate(
    engine_path: Path,
    good: Path,
    bad: Path | None = None,
    target: float = 0.001,
    report: Path | None = None,
    seed: int = 0,
) -> dict:
    """Calibrate ``engine_path`` in place (its sidecar) and write the report; returns the calibration."""
    engine = open_engine(Path(engine_path))
    with engine:
        good_scored = score_images(engine, good, highest=True)
        bad_scored = score_images(engine, bad, highest=False) if bad is not None else None
    score = engine.sidecar.score
    result = false_reject_threshold(good_scored.scores, target, np.random.default_rng(seed), score)
    threshold = result["threshold"]
    result["pixel_threshold"] = pixel_threshold(good_scored.map_maxima, threshold, score.bounded)
    if bad_scored is not None:
        result["bad"] = with_bad_images(good_scored.scores, bad_scored.scores, threshold)
    z = score.to_z(good_scored.scores)
    result["good_z_mean"], result["good_z_std"] = float(z.mean()), float(z.std(ddof=1))
    result["good_scores"] = [float(f"{v:.6g}") for v in good_scored.scores]  # for re-calibration estimates
    scale = "logit" if score.bounded else "log"
    result.update(
        score_kind=score.kind,
        method=f"generalised Pareto tail of {scale} scores over their 80th percentile; bootstrap 95 % interval",
        engine_sha256=engine.sidecar.sha256,
        good_folder=str(good),
        bad_folder=str(bad) if bad is not None else None,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    if report is not None:
        from calibration.report import write_report

        result["report"] = str(write_report(Path(report), result, good_scored, bad_scored))
    sidecar = read_sidecar(engine.path)  # again, verified: nothing changed the artefact meanwhile
    if sidecar.calibration:
        sidecar.calibration_history.append(sidecar.calibration)
    sidecar.calibration = result
    write_sidecar(engine.path, sidecar)
    log.info("threshold %.4f for %.3g false rejects written to %s", threshold, target, engine.path.name + ".json")
    return result
