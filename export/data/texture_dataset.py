"""Build a small MVTec-AD-style dataset from a real photograph of a surface, with no download.

scikit-image ships photographs this module cuts sets from, in two roles (:data:`SURFACES`):

* development surfaces, the 512×512 grey photos ``brick``, ``grass`` and ``gravel``: presets, defaults and any
  other choice are made on these (with validation seeds, ``seed=1``);
* held-out surfaces, ``cell`` (the plain left part of the micrograph), ``hubble_deep_field`` and ``retina`` (the
  square inside the fundus): figures are reported on these, nothing is chosen on them.

A user's own photo (any image file) works the same way (:func:`make_texture_dataset` with a path). The module
cuts random windows out of one photo and writes::

    OUT/train/good/000.png ...
    OUT/test/good/000.png ...
    OUT/test/<defect>/000.png ...
    OUT/ground_truth/<defect>/000_mask.png ...   (uint8 0/255, same size as the image)

Training windows come from the top band of the photo and test windows from the disjoint bottom band, so no test
image is a copy of a training image. Test defects are painted at generation time and are of kinds a
Perlin-noise defect simulator never makes (in the spirit of the MemSeg paper's §4.7 toy set): thin
``scratch`` lines, dark branching ``crack`` polylines, smooth ``stain`` blobs, regular filled ``shape``\\ s,
clusters of small ``pit``\\ s (dents lit from one side) and ``smear``\\ s (the surface blurred along a stroke).
Masks are exact: the set of painted pixels, and every pixel outside the mask equals the clean crop.

Images are 8-bit, 3-channel PNG files (grey replicated, except that a stain may carry a slight tint); masks are
single-channel 0/255 PNG files. Output is deterministic for a given seed.
"""

from __future__ import annotations

import functools
import json
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class Surface:
    """A scikit-image photo a set can be cut from: its role, the part of it that is surface, the default window."""

    role: str  # "development" or "held-out"
    region: tuple[float, float, float, float] = (0.0, 1.0, 0.0, 1.0)  # top, bottom, left, right (fractions)
    crop: int = 192  # default window side in photo pixels


SURFACES: dict[str, Surface] = {
    "brick": Surface("development"),
    "grass": Surface("development"),
    "gravel": Surface("development"),
    "cell": Surface("held-out", region=(0.0, 1.0, 0.0, 0.65)),  # left of the one large cell (cols 375-482)
    "hubble_deep_field": Surface("held-out", crop=256),
    "retina": Surface("held-out", region=(0.155, 0.845, 0.155, 0.845), crop=320),  # the square inside the disc
}
TEXTURES: tuple[str, ...] = tuple(name for name, s in SURFACES.items() if s.role == "development")
HELD_OUT: tuple[str, ...] = tuple(name for name, s in SURFACES.items() if s.role == "held-out")
DEFECT_KINDS: tuple[str, ...] = ("scratch", "crack", "stain", "shape", "pit", "smear")

#: Hidden file in the dataset root that marks the folder as written by :func:`make_texture_dataset` and lists
#: the files it wrote, so that a re-run may replace exactly those files and nothing else.
MARKER_NAME = ".texture_dataset.json"

MIN_IMAGE_SIZE = 32
MAX_IMAGE_SIZE = 1024
MIN_CROP = 16
#: Fraction of the photo's rows given to training windows; the rest (below) is for test windows.
TRAIN_FRACTION = 0.6
#: Defect area as a fraction of the image, inclusive bounds.
MIN_COVERAGE = 0.002
MAX_COVERAGE = 0.05
#: Minimum difference between the mean of the defect pixels and the mean of the background around them.
MIN_CONTRAST = 40.0
#: Minimum mean absolute change of the pixels of a defect that changes texture rather than level (``smear``).
MIN_CHANGE = 15.0

_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1]  # fast; level 3+ saves ~10 % size at twice the time
_MARKER_VERSION = 2
ORIENTATIONS = ("any", "fixed")  # windows turned and mirrored at random, or as cut


# --------------------------------------------------------------------------------------------------------------
# Photos


def _grey(image: np.ndarray, origin: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3:
        image = cv2.cvtColor(image[..., :3], cv2.COLOR_RGB2GRAY)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"{origin} is {image.shape} {image.dtype}, expected an 8-bit grey or colour image")
    return image


@functools.cache
def _load_texture_cached(name: str) -> np.ndarray:
    import skimage.data  # lazy: only needed when a dataset is actually built

    image = _grey(getattr(skimage.data, name)(), f"skimage.data.{name}()")
    top, bottom, left, right = SURFACES[name].region
    height, width = image.shape
    image = np.ascontiguousarray(
        image[round(top * height) : round(bottom * height), round(left * width) : round(right * width)]
    )
    image.setflags(write=False)
    return image


def load_texture(name: str) -> np.ndarray:
    """Return the surface part of the scikit-image photo ``name`` (one of :data:`SURFACES`) as an H×W uint8 array.

    The photo is read on first use and cached; the caller gets its own writable copy.
    """
    _check_texture(name)
    return _load_texture_cached(name).copy()


def _check_texture(name: object) -> None:
    if name not in SURFACES:
        raise ValueError(
            f"unknown texture {name!r}: choose one of {', '.join(TEXTURES)} (development) or {', '.join(HELD_OUT)} "
            "(held-out), or give the path of a photo of your own surface"
        )


def read_photo(texture: str | Path) -> tuple[np.ndarray, str, int]:
    """The grey photo a set is cut from, its name and a number that seeds its windows: a :data:`SURFACES` name, or
    the path of an image file of the user's own surface."""
    if isinstance(texture, str) and texture in SURFACES:
        return _load_texture_cached(texture), texture, list(SURFACES).index(texture)
    path = Path(texture)
    if isinstance(texture, str) and not path.is_file():
        _check_texture(texture)
    if not path.is_file():
        raise ValueError(f"photo not found: {path}; give the path of an image file of the surface")
    data = np.fromfile(path, np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise ValueError(f"cannot read {path} as an image: give a PNG, JPEG, BMP or TIFF photo of the surface")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 3:  # OpenCV reads BGR(A)
        image = cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2RGB)
    return _grey(image, str(path)), path.stem, zlib.crc32(data.tobytes())


# --------------------------------------------------------------------------------------------------------------
# Defects


def paste_defect(
    image: np.ndarray,
    kind: str,
    rng: np.random.Generator,
    *,
    avoid_texture: str | None = None,
    max_tries: int = 60,
) -> tuple[np.ndarray, np.ndarray]:
    """Paint one defect of ``kind`` (one of :data:`DEFECT_KINDS`) onto a copy of ``image``.

    ``image`` is H×W or H×W×3 uint8 (BGR). Returns ``(defective, mask)``: ``defective`` has the input's shape
    and dtype, ``mask`` is H×W uint8 with 255 exactly on the painted pixels and 0 elsewhere; every pixel where
    ``mask == 0`` equals the input. The defect covers about 0.2 %–5 % of the image and its mean differs from
    the mean of the surrounding background by at least ~40 grey levels (a ``smear`` instead changes its pixels
    by at least 15 grey levels on average; candidates are redrawn until both hold;
    after ``max_tries`` the closest candidate is returned). ``avoid_texture`` keeps a ``shape`` filled with a
    foreign photo from using that texture (pass the texture of ``image``).
    """
    if kind not in DEFECT_KINDS:
        raise ValueError(f"unknown defect kind {kind!r}: choose one of {', '.join(DEFECT_KINDS)}")
    source = np.asarray(image)
    if source.dtype != np.uint8 or not (source.ndim == 2 or (source.ndim == 3 and source.shape[2] == 3)):
        raise ValueError(f"image must be H×W or H×W×3 uint8, got shape {source.shape} dtype {source.dtype}")
    if min(source.shape[:2]) < 16:
        raise ValueError(f"image must be at least 16×16 pixels, got {source.shape[1]}×{source.shape[0]}")
    if max_tries < 1:
        raise ValueError(f"max_tries must be at least 1, got {max_tries}")

    colour = source.ndim == 3
    grey = (cv2.cvtColor(source, cv2.COLOR_BGR2GRAY) if colour else source).astype(np.float32)
    h, w = grey.shape
    scale = min(h, w) / 256.0
    painter = _PAINTERS[kind]
    ring_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * max(2, round(5 * scale)) + 1,) * 2)

    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for _ in range(max_tries):
        mask, aux = painter.geometry(rng, h, w, scale)
        area = int(np.count_nonzero(mask))
        if area == 0:
            continue
        ring = (cv2.dilate(mask.astype(np.uint8), ring_kernel) > 0) & ~mask
        around = grey[ring] if ring.any() else grey
        background = float(around.mean())
        canvas = _Canvas(source, grey, mask, background, float(around.std()), aux, avoid_texture)
        layer = painter.paint(rng, canvas)
        out = source.copy()
        out[mask] = layer[mask]
        out_grey = (cv2.cvtColor(out, cv2.COLOR_BGR2GRAY) if colour else out).astype(np.float32)
        coverage = area / (h * w)
        if painter.changes_texture:
            change = float(np.abs(out_grey[mask] - grey[mask]).mean())
            shortfall = max(0.0, MIN_CHANGE - change) / MIN_CHANGE
        else:
            contrast = abs(float(out_grey[mask].mean()) - background)
            shortfall = max(0.0, MIN_CONTRAST - contrast) / MIN_CONTRAST
        if coverage < MIN_COVERAGE:
            shortfall += (MIN_COVERAGE - coverage) / MIN_COVERAGE
        elif coverage > MAX_COVERAGE:
            shortfall += (coverage - MAX_COVERAGE) / MAX_COVERAGE
        if best is None or shortfall < best[0]:
            best = (shortfall, out, mask)
        if shortfall == 0.0:
            break
    if best is None:  # pragma: no cover - every painter draws at least one pixel inside the image
        raise RuntimeError(f"could not place a {kind} defect on a {w}×{h} image")
    _, out, mask = best
    return out, mask.astype(np.uint8) * 255


def _random_point(rng: np.random.Generator, h: int, w: int, margin: float) -> np.ndarray:
    m_x = min(margin, (w - 1) / 2)
    m_y = min(margin, (h - 1) / 2)
    return np.array([rng.uniform(m_x, w - 1 - m_x), rng.uniform(m_y, h - 1 - m_y)])


def _thickness(rng: np.random.Generator, h: int, w: int) -> int:
    return int(rng.integers(1, 4 if min(h, w) >= 128 else 3))


def _draw_polyline(mask: np.ndarray, points: np.ndarray, thickness: int) -> None:
    pts = np.rint(points).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(mask, [pts], False, 255, thickness=thickness, lineType=cv2.LINE_8)


class _Canvas:
    """What a painter needs to fill in a defect whose geometry (``mask``) is already drawn."""

    def __init__(
        self,
        source: np.ndarray,
        grey: np.ndarray,
        mask: np.ndarray,
        background: float,
        spread: float,
        aux: object,
        avoid_texture: str | None,
    ) -> None:
        self.source = source  # the clean image, H×W or H×W×3 uint8
        self.grey = grey  # its grey version, H×W float32
        self.mask = mask  # H×W bool
        self.background = background  # mean grey level of the clean pixels around the mask
        self.spread = spread  # their standard deviation
        self.aux = aux  # whatever the geometry step wants to hand to the paint step
        self.avoid_texture = avoid_texture

    def level(self, rng: np.random.Generator, lo: float, hi: float, sign: int = 0) -> float:
        """A grey level ``lo``..``hi`` (plus half the local spread) brighter or darker than the background.

        ``sign`` +1 / -1 prefers a side; 0 picks one at random. Either switches where that side has no head-room
        and the other has (a dark crack on a black sky would not be seen). Busy textures (gravel, grass) get the
        extra margin so a defect does not vanish among their shadows.
        """
        delta = float(rng.uniform(lo, hi)) + 0.5 * self.spread
        if sign == 0:
            sign = 1 if rng.random() < 0.5 else -1
        if not 0.0 <= self.background + sign * delta <= 255.0 and 0.0 <= self.background - sign * delta <= 255.0:
            sign = -sign
        return float(np.clip(self.background + sign * delta, 0.0, 255.0))

    def layer(self, values: np.ndarray, tint: Sequence[float] | None = None) -> np.ndarray:
        """Turn an H×W float grey layer into uint8 in the source's layout, optionally tinted (BGR gains)."""
        if self.source.ndim == 2:
            return np.clip(np.rint(values), 0, 255).astype(np.uint8)
        gains = np.asarray(tint if tint is not None else (1.0, 1.0, 1.0), dtype=np.float32)
        return np.clip(np.rint(values[..., None] * gains), 0, 255).astype(np.uint8)


# scratch: one to three thin, nearly parallel, straight or slightly bent lines of one brightness


def _scratch_geometry(rng: np.random.Generator, h: int, w: int, scale: float) -> tuple[np.ndarray, None]:
    canvas = np.zeros((h, w), np.uint8)
    size = min(h, w)
    base_angle = rng.uniform(0, math.pi)
    centre = _random_point(rng, h, w, 0.25 * size)
    for _ in range(int(rng.integers(1, 4))):
        angle = base_angle + rng.normal(0, 0.12)
        length = rng.uniform(0.3, 0.7) * size
        direction = np.array([math.cos(angle), math.sin(angle)])
        normal = np.array([-direction[1], direction[0]])
        mid = centre + normal * rng.uniform(-0.12, 0.12) * size + direction * rng.uniform(-0.1, 0.1) * size
        start, end = mid - direction * length / 2, mid + direction * length / 2
        control = mid + normal * rng.uniform(-0.08, 0.08) * length  # quadratic Bézier: a slight bend
        t = np.linspace(0.0, 1.0, 24)[:, None]
        points = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end
        _draw_polyline(canvas, points, _thickness(rng, h, w))
    return canvas > 0, None


def _scratch_paint(rng: np.random.Generator, c: _Canvas) -> np.ndarray:
    level = c.level(rng, 60, 110)
    return c.layer(level + rng.normal(0, 4, size=c.grey.shape))


# crack: a dark random walk with a few branches, thinner than the trunk


def _crack_geometry(rng: np.random.Generator, h: int, w: int, scale: float) -> tuple[np.ndarray, None]:
    canvas = np.zeros((h, w), np.uint8)
    size = min(h, w)
    step = max(1.5, rng.uniform(3.0, 6.0) * scale)
    trunk_thickness = _thickness(rng, h, w)

    def walk(start: np.ndarray, heading: float, steps: int) -> np.ndarray:
        # Jagged but going somewhere: the deviation from the heading is a mean-reverting random walk.
        points, deviation = [start], 0.0
        for _ in range(steps):
            deviation = 0.6 * deviation + rng.normal(0, 0.45)
            angle = heading + deviation
            points.append(points[-1] + step * np.array([math.cos(angle), math.sin(angle)]))
        return np.array(points)

    trunk = walk(_random_point(rng, h, w, 0.2 * size), rng.uniform(0, 2 * math.pi), int(rng.integers(12, 26)))
    _draw_polyline(canvas, trunk, trunk_thickness)
    for i in range(2, len(trunk) - 1):
        if rng.random() < 0.12:
            dx, dy = trunk[i + 1] - trunk[i]
            side = 1 if rng.random() < 0.5 else -1
            heading = math.atan2(dy, dx) + side * rng.uniform(0.4, 1.2)
            branch = walk(trunk[i], heading, int(rng.integers(3, 10)))
            _draw_polyline(canvas, branch, max(1, trunk_thickness - 1))
    return canvas > 0, None


def _crack_paint(rng: np.random.Generator, c: _Canvas) -> np.ndarray:
    level = c.level(rng, 60, 110, sign=-1)
    return c.layer(level + rng.normal(0, 3, size=c.grey.shape))


# stain: a smooth irregular blob blended over the texture, denser inside, with a soft but clipped edge

_STAIN_TINTS = (  # BGR gains on the stain's grey level
    (1.0, 1.0, 1.0),  # neutral (water, grease)
    (1.0, 1.0, 1.0),
    (0.86, 0.98, 1.12),  # rust: less blue, more red
    (1.1, 1.0, 0.92),  # bluish (coolant)
)
_STAIN_EDGE = 0.35  # field value where the stain is clipped
_STAIN_FULL = 0.75  # field value from which the stain has its core opacity
_STAIN_EDGE_ALPHA = 0.45  # opacity at the clipped edge
_STAIN_CORE_ALPHA = 0.85  # opacity inside: the texture still shows through


def _stain_geometry(rng: np.random.Generator, h: int, w: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    radius = rng.uniform(10, 28) * scale
    centre = _random_point(rng, h, w, 1.2 * radius)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    field = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(3, 7))):  # a few overlapping Gaussian bumps make an irregular blob
        cx, cy = centre + rng.normal(0, 0.45 * radius, size=2)
        sigma = rng.uniform(0.4, 0.75) * radius
        field += rng.uniform(0.6, 1.0) * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
    field /= max(float(field.max()), 1e-6)
    return field >= _STAIN_EDGE, field


def _stain_paint(rng: np.random.Generator, c: _Canvas) -> np.ndarray:
    ramp = np.clip((c.aux - _STAIN_EDGE) / (_STAIN_FULL - _STAIN_EDGE), 0.0, 1.0)
    alpha = _STAIN_EDGE_ALPHA + (_STAIN_CORE_ALPHA - _STAIN_EDGE_ALPHA) * ramp
    level = c.level(rng, 80, 130)
    if c.source.ndim == 2:
        return c.layer(c.grey * (1 - alpha) + level * alpha)
    tint = _STAIN_TINTS[int(rng.integers(len(_STAIN_TINTS)))]
    stain = c.layer(np.full(c.grey.shape, level, np.float32), tint).astype(np.float32)
    blended = c.source.astype(np.float32) * (1 - alpha[..., None]) + stain * alpha[..., None]
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


# shape: a regular filled circle, rectangle, triangle or ellipse of a plain level or a foreign texture

_SHAPES = ("circle", "rectangle", "triangle", "ellipse")


def _shape_geometry(rng: np.random.Generator, h: int, w: int, scale: float) -> tuple[np.ndarray, None]:
    canvas = np.zeros((h, w), np.uint8)
    size = rng.uniform(12, 40) * scale  # bounding size in pixels
    centre = _random_point(rng, h, w, 0.6 * size + 1)
    cx, cy = round(float(centre[0])), round(float(centre[1]))
    angle = rng.uniform(0, 180)
    half = max(1, round(size / 2))
    shape = _SHAPES[int(rng.integers(len(_SHAPES)))]
    if shape == "circle":
        cv2.circle(canvas, (cx, cy), half, 255, thickness=-1, lineType=cv2.LINE_8)
    elif shape == "ellipse":
        axes = (half, max(1, round(half * rng.uniform(0.35, 0.7))))
        cv2.ellipse(canvas, (cx, cy), axes, angle, 0, 360, 255, thickness=-1, lineType=cv2.LINE_8)
    else:
        if shape == "rectangle":
            corners = cv2.boxPoints(((float(centre[0]), float(centre[1])), (size, size * rng.uniform(0.5, 1)), angle))
        else:  # equilateral triangle
            turns = math.radians(angle) + np.arange(3) * 2 * math.pi / 3
            corners = centre + size / 2 * np.stack([np.cos(turns), np.sin(turns)], axis=1)
        cv2.fillPoly(canvas, [np.rint(corners).astype(np.int32)], 255, lineType=cv2.LINE_8)
    return canvas > 0, None


def _shape_paint(rng: np.random.Generator, c: _Canvas) -> np.ndarray:
    h, w = c.grey.shape
    sign = 1 if rng.random() < 0.5 else -1
    if not 0 <= c.background + sign * 70 <= 255:
        sign = -sign
    fill = int(rng.integers(3))
    if fill == 0:  # plain level: a foreign part, a drop of paint
        values = c.level(rng, 60, 110, sign) + rng.normal(0, 3, size=(h, w))
    elif fill == 1:  # stripes: a machined or printed pattern
        period = rng.uniform(3, 7) * max(1.0, min(h, w) / 256.0)
        theta = rng.uniform(0, math.pi)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        stripes = (np.floor((xs * math.cos(theta) + ys * math.sin(theta)) / period) % 2).astype(np.float32)
        near = c.level(rng, 45, 70, sign)
        far = c.level(rng, 95, 140, sign)
        values = near + (far - near) * stripes
    else:  # a patch of a different photographed texture, shifted in brightness
        others = [t for t in TEXTURES if t != c.avoid_texture]
        photo = _load_texture_cached(others[int(rng.integers(len(others)))])
        if photo.shape[0] < h or photo.shape[1] < w:
            size = (max(w, photo.shape[1]), max(h, photo.shape[0]))
            photo = cv2.resize(photo, size, interpolation=cv2.INTER_LINEAR)
        y0 = int(rng.integers(photo.shape[0] - h + 1))
        x0 = int(rng.integers(photo.shape[1] - w + 1))
        patch = photo[y0 : y0 + h, x0 : x0 + w].astype(np.float32)
        target = c.level(rng, 65, 110, sign)
        values = (patch - float(patch[c.mask].mean())) * rng.uniform(0.8, 1.3) + target
    return c.layer(values)


# pit: a cluster of small round dents, dark inside, their rim lit from one side


def _pit_geometry(rng: np.random.Generator, h: int, w: int, scale: float) -> tuple[np.ndarray, list]:
    canvas = np.zeros((h, w), np.uint8)
    centre = _random_point(rng, h, w, 0.15 * min(h, w))
    pits = []
    for _ in range(int(rng.integers(2, 7))):
        radius = max(1.5, rng.uniform(4.0, 9.0) * scale)
        x, y = centre + rng.normal(0, 14 * scale, size=2)
        cv2.circle(canvas, (round(x), round(y)), round(radius), 255, thickness=-1, lineType=cv2.LINE_8)
        pits.append((x, y, radius))
    return canvas > 0, pits


def _pit_paint(rng: np.random.Generator, c: _Canvas) -> np.ndarray:
    h, w = c.grey.shape
    level = c.level(rng, 60, 110, sign=-1)
    light = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    shading = np.zeros((h, w), np.float32)
    for x, y, radius in c.aux:
        along = ((xs - x) * math.cos(light) + (ys - y) * math.sin(light)) / max(radius, 1.0)
        near = (xs - x) ** 2 + (ys - y) ** 2 <= (radius + 1) ** 2
        shading[near] = np.clip(along[near], 0.0, 1.0)  # the far wall catches the light
    lit = np.clip(level + 0.6 * (c.background - level) * shading, 0, 255)
    return c.layer(lit + rng.normal(0, 3, size=(h, w)))


# smear: a stroke along which the surface is blurred (grease, a wiped wet spot), slightly lighter or darker


def _smear_geometry(rng: np.random.Generator, h: int, w: int, scale: float) -> tuple[np.ndarray, tuple]:
    length = rng.uniform(30, 70) * scale
    width = rng.uniform(8, 18) * scale
    angle = rng.uniform(0, math.pi)
    centre = _random_point(rng, h, w, 0.5 * length + width)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    u = (xs - centre[0]) * math.cos(angle) + (ys - centre[1]) * math.sin(angle)
    v = -(xs - centre[0]) * math.sin(angle) + (ys - centre[1]) * math.cos(angle)
    wobble = 0.3 * width * np.sin(u / max(length, 1.0) * rng.uniform(2, 5) + rng.uniform(0, 2 * math.pi))
    field = np.exp(-((u / (0.5 * length)) ** 4) - ((v - wobble) / (0.5 * width)) ** 2)
    return field >= 0.3, (field, angle, length)


def _smear_paint(rng: np.random.Generator, c: _Canvas) -> np.ndarray:
    field, angle, length = c.aux
    size = max(3, int(0.4 * length) | 1)
    kernel = np.zeros((size, size), np.float32)
    half = size // 2
    dx, dy = math.cos(angle) * half, math.sin(angle) * half
    cv2.line(kernel, (round(half - dx), round(half - dy)), (round(half + dx), round(half + dy)), 1.0, 1)
    kernel /= kernel.sum()
    blurred = cv2.filter2D(c.source, -1, kernel, borderType=cv2.BORDER_REFLECT)
    blurred = cv2.GaussianBlur(blurred, (0, 0), max(1.0, 0.05 * length)).astype(np.float32)
    shift = rng.uniform(15, 35) * (1 if rng.random() < 0.5 else -1)
    alpha = np.clip(field / 0.6, 0.0, 1.0)
    if c.source.ndim == 3:
        alpha = alpha[..., None]
    mixed = c.source.astype(np.float32) * (1 - alpha) + (blurred + shift) * alpha
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


class _Painter:
    def __init__(
        self,
        geometry: Callable[[np.random.Generator, int, int, float], tuple[np.ndarray, object]],
        paint: Callable[[np.random.Generator, _Canvas], np.ndarray],
        changes_texture: bool = False,
    ) -> None:
        self.geometry = geometry
        self.paint = paint
        self.changes_texture = changes_texture  # visible as changed pixels (MIN_CHANGE), not as a level


_PAINTERS = {
    "scratch": _Painter(_scratch_geometry, _scratch_paint),
    "crack": _Painter(_crack_geometry, _crack_paint),
    "stain": _Painter(_stain_geometry, _stain_paint),
    "shape": _Painter(_shape_geometry, _shape_paint),
    "pit": _Painter(_pit_geometry, _pit_paint),
    "smear": _Painter(_smear_geometry, _smear_paint, changes_texture=True),
}


# --------------------------------------------------------------------------------------------------------------
# Crops


def _row_bands(height: int, crop: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Disjoint row bands ``[start, stop)`` of the photo for train windows and for test windows."""
    split = min(max(round(TRAIN_FRACTION * height), crop), height - crop)
    return (0, split), (split, height)


def _random_crop(
    photo: np.ndarray, rows: tuple[int, int], crop: int, image_size: int, rng: np.random.Generator, *, turn: bool
) -> np.ndarray:
    """A ``crop``×``crop`` window lying wholly inside ``rows``, resized, 3-channel; with ``turn`` randomly rotated
    by a multiple of 90° and mirrored (the draws are made either way, so both give the same windows)."""
    y = int(rng.integers(rows[0], rows[1] - crop + 1))
    x = int(rng.integers(0, photo.shape[1] - crop + 1))
    window = photo[y : y + crop, x : x + crop]
    if crop != image_size:
        window = cv2.resize(window, (image_size, image_size), interpolation=cv2.INTER_AREA)
    quarter_turns, mirrored = int(rng.integers(4)), rng.random() < 0.5
    if turn:
        window = np.rot90(window, quarter_turns)
        window = window[:, ::-1] if mirrored else window
    return cv2.cvtColor(np.ascontiguousarray(window), cv2.COLOR_GRAY2BGR)


# --------------------------------------------------------------------------------------------------------------
# Dataset folder


def _check_int(name: str, value: object, lo: int, hi: int | None = None, why: str = "") -> int:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < lo or (hi is not None and value > hi):
        allowed = f"an integer in [{lo}, {hi}]" if hi is not None else f"an integer >= {lo}"
        raise ValueError(f"{name} must be {allowed}{why}; got {value!r}")
    return int(value)


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", image, _PNG_PARAMS)
    if not ok:  # pragma: no cover - encoding a uint8 array does not fail
        raise RuntimeError(f"could not encode {path.name} as PNG")
    path.write_bytes(data.tobytes())


def _prepare_folder(out: Path) -> None:
    """Make ``out`` ready to write into, or refuse; only files a previous run listed in its marker are removed."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder; choose a new or empty folder for the dataset")
    if not out.exists() or not any(out.iterdir()):
        return
    marker = out / MARKER_NAME
    refuse = (
        f"{out} is not empty and is not a dataset written by make_texture_dataset (no readable {MARKER_NAME}); "
        "refusing to write into it, nothing was changed. Choose a new or empty folder."
    )
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
        ours = {out / name for name in recorded["files"]}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise FileExistsError(refuse) from error
    # Anything but a real folder counts as a file here, so a symlink (even to a folder) is never followed.
    present = {p for p in out.rglob("*") if p.is_symlink() or not p.is_dir()} - {marker}
    foreign = sorted(present - ours)
    if foreign:
        shown = ", ".join(str(p.relative_to(out)) for p in foreign[:5])
        more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        raise FileExistsError(
            f"{out} holds a texture dataset but also files it did not write ({shown}{more}); refusing to "
            "overwrite it, nothing was changed. Move those files away or choose a new or empty folder."
        )
    for path in present:
        path.unlink()
    marker.unlink()
    folders = [p for p in out.rglob("*") if p.is_dir() and not p.is_symlink()]
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()


def make_texture_dataset(
    texture: str,
    out: Path,
    *,
    image_size: int = 256,
    train: int = 200,
    test_good: int = 30,
    test_per_defect: int = 15,
    crop: int | None = None,
    seed: int = 0,
    contamination: float = 0.0,
    defects: Sequence[str] = DEFECT_KINDS,
    orientation: str = "any",
) -> dict:
    """Write an MVTec-AD-style dataset cut from the photo ``texture`` (a :data:`SURFACES` name or an image file)
    into ``out``; return a summary.

    ``train`` good training images, ``test_good`` good test images and ``test_per_defect`` images of each kind in
    ``defects`` (with masks under ``ground_truth``), all ``image_size``×``image_size`` 3-channel PNG, each a
    ``crop``×``crop`` window of the photo (default: the surface's, 192 px for a file), with ``orientation`` "any"
    each window turned by a random multiple of 90° and mirrored at random (a surface cut or fed in any direction),
    with "fixed" as cut (parts that always face the camera one way; the same windows, defects drawn from the same
    seeds).
    ``out`` must be missing, empty, or a dataset an earlier call wrote (its files are then replaced); anything else
    raises :class:`FileExistsError` and is left untouched.
    Raises :class:`ValueError` for an unknown texture or impossible sizes or counts. The same arguments always
    give byte-identical files, and image ``i`` of a split does not depend on how many images the split has.

    The summary holds ``texture``, ``image_size``, ``crop``, ``seed``, ``train_rows`` and ``test_rows`` (the
    disjoint row bands ``[start, stop)`` of the photo the windows come from), ``orientation``, ``defect_kinds``,
    ``counts`` (images per ``"train/good"``, ``"test/good"``, ``"test/<defect>"``) and ``path``.

    ``contamination`` (in [0, 1]) paints a defect of the test kinds (in turn) onto that fraction of the training
    images, chosen at random, as a training folder nobody cleaned would hold; their masks are kept aside under
    ``train_contamination/<defect>/`` and the summary lists them under ``contaminated``. The clean images are the
    same as without contamination.
    """
    photo, texture, texture_id = read_photo(texture)
    _check_int("image_size", image_size, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
    height, width = photo.shape
    max_crop = min(height // 2, width)
    if crop is None:
        crop = min(SURFACES[texture].crop if texture in SURFACES else 192, max_crop)
    why = f" (train and test windows come from disjoint row bands of the {width}×{height} {texture} photo)"
    _check_int("crop", crop, MIN_CROP, max_crop, why)
    defects = tuple(defects)
    unknown = sorted(set(defects) - set(DEFECT_KINDS))
    if unknown or not defects or len(set(defects)) != len(defects):
        raise ValueError(f"defects {', '.join(defects) or '(none)'}: give distinct kinds of {', '.join(DEFECT_KINDS)}")
    for name, value in (("train", train), ("test_good", test_good), ("test_per_defect", test_per_defect)):
        _check_int(name, value, 0)
    _check_int("seed", seed, 0)
    if not 0.0 <= contamination <= 1.0:
        raise ValueError(f"contamination must be a fraction in [0, 1]; got {contamination!r}")
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation {orientation!r}: one of {', '.join(ORIENTATIONS)}")

    out = Path(out)
    train_rows, test_rows = _row_bands(height, crop)
    plan: list[tuple[str, str, int]] = [("train", "good", train), ("test", "good", test_good)]
    plan += [("test", kind, test_per_defect) for kind in defects]
    digits = max(3, len(str(max(train, test_good, test_per_defect, 1) - 1)))

    def name(i: int) -> str:
        return f"{i:0{digits}d}"

    files = [f"{split}/{label}/{name(i)}.png" for split, label, n in plan for i in range(n)]
    files += [f"ground_truth/{kind}/{name(i)}_mask.png" for kind in defects for i in range(test_per_defect)]
    picked = np.random.default_rng([seed, texture_id, len(plan)]).permutation(train)
    contaminated = {int(i): defects[j % len(defects)] for j, i in enumerate(picked[: round(contamination * train)])}
    files += [f"train_contamination/{kind}/{name(i)}_mask.png" for i, kind in sorted(contaminated.items())]
    summary = {
        "texture": texture,
        "image_size": image_size,
        "crop": crop,
        "seed": seed,
        "train_rows": list(train_rows),
        "test_rows": list(test_rows),
        "role": SURFACES[texture].role if texture in SURFACES else "user",
        "orientation": orientation,
        "defect_kinds": list(defects),
        "counts": {f"{split}/{label}": n for split, label, n in plan},
    }
    if contaminated:
        summary |= {
            "contamination": contamination,
            "contaminated": {name(i): k for i, k in sorted(contaminated.items())},
        }

    _prepare_folder(out)
    for split, label, _ in plan:
        (out / split / label).mkdir(parents=True, exist_ok=True)
    for kind in defects:
        (out / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
    for kind in set(contaminated.values()):
        (out / "train_contamination" / kind).mkdir(parents=True, exist_ok=True)
    # The marker goes first, listing every file about to be written, so an interrupted run can be redone.
    marker = {
        "generator": "export.data.texture_dataset",
        "version": _MARKER_VERSION,
        "summary": summary,
        "files": files,
    }
    (out / MARKER_NAME).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")

    for split, label, n in plan:
        # a kind's images do not depend on which other kinds are asked for
        split_id = 0 if split == "train" else 1 if label == "good" else 2 + DEFECT_KINDS.index(label)
        rows = train_rows if split == "train" else test_rows
        for i in range(n):
            rng = np.random.default_rng([seed, texture_id, split_id, i])
            image = _random_crop(photo, rows, crop, image_size, rng, turn=orientation == "any")
            if label != "good":
                image, mask = paste_defect(image, label, rng, avoid_texture=texture)
                _write_png(out / "ground_truth" / label / f"{name(i)}_mask.png", mask)
            elif split == "train" and i in contaminated:
                image, mask = paste_defect(image, contaminated[i], rng, avoid_texture=texture)
                _write_png(out / "train_contamination" / contaminated[i] / f"{name(i)}_mask.png", mask)
            _write_png(out / split / label / f"{name(i)}.png", image)
    return {**summary, "path": str(out)}
