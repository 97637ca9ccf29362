"""Anomaly simulation for MemSeg training (numpy + OpenCV only, no torch).

MemSeg (Yang et al., "MemSeg: A semi-supervised method for image surface defect detection using
differences and commonalities", Engineering Applications of Artificial Intelligence, 2023, §3.2) trains
on defect-free images only and makes its own abnormal samples. It follows DRAEM's Perlin-noise approach
(Zavrtanik et al., ICCV 2021) with a foreground restriction and a second noise source:

1. **Mask.** A 2-D Perlin noise image ``P`` (random lattice resolution per axis, a power of two, so the
   blobs come in many scales) is rotated by a random angle and thresholded into ``M_p``. For object-like
   images it is AND-ed with a foreground mask ``M_i`` (the grey image binarised with Otsu, cleaned by
   morphological opening and closing) so defects land on the object, not on the background.
2. **Noise image** ``I_n``: with probability ``texture_probability`` a texture (a random image from a
   folder such as DTD, or a procedurally made one when no folder is given); otherwise the image itself,
   mirrored / rotated / colour-jittered and cut into a 4 x 8 grid whose cells are randomly permuted, so the
   defect looks like displaced structure of the part itself.
3. **Blend**: ``I_A = (1 - M)*I + delta*M*I_n + (1 - delta)*M*I`` with ``delta ~ U[0.15, 1]``.

Everything random is drawn from the ``numpy.random.Generator`` passed in (no global numpy state, no OpenCV
RNG), so a given seed reproduces a sample exactly; the OpenCV calls used are deterministic.

Typical use, in a ``Dataset.__getitem__`` running in a DataLoader worker::

    simulator = DefectSimulator(texture_dir=Path("dtd/images"), use_foreground=True)
    augmented, mask = simulator(image_rgb_uint8, rng)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

__all__ = [
    "IMAGE_EXTENSIONS",
    "DefectSimulator",
    "Simulation",
    "blend",
    "color_jitter",
    "foreground_mask",
    "perlin_mask",
    "perlin_noise",
    "procedural_texture",
    "shuffle_grid",
]

#: File extensions (lower case) read from a texture folder.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

#: Perlin lattice resolution per axis is ``2**k`` with ``k`` drawn uniformly from this inclusive range.
#: DRAEM draws ``k`` with ``torch.randint(0, 6)``, i.e. resolutions 1..32.
PERLIN_SCALE_EXPONENTS: tuple[int, int] = (0, 5)

#: Rotation of the Perlin noise before thresholding, degrees (DRAEM: ``iaa.Affine(rotate=(-90, 90))``).
PERLIN_ROTATION_DEG: tuple[float, float] = (-90.0, 90.0)

#: Grid (rows, cols) for the structure noise made from the image itself.
SHUFFLE_GRID: tuple[int, int] = (4, 8)

#: Draws of the Perlin mask before falling back to a small elliptical blob.
MASK_RETRIES = 10


# ----------------------------------------------------------------------------------------------------------
# Perlin noise and masks
# ----------------------------------------------------------------------------------------------------------


def _fade(t: np.ndarray) -> np.ndarray:
    """Perlin's quintic fade curve 6t^5 - 15t^4 + 10t^3."""
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def perlin_noise(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2-D gradient (Perlin) noise, float32 of ``shape`` with values in [-1, 1].

    ``res`` is the number of lattice cells along (rows, cols); unit gradients with random angles sit on the
    ``(res[0] + 1) x (res[1] + 1)`` lattice points. The lattice is stretched over the output, so ``shape``
    need not be a multiple of ``res``. Like DRAEM the result is scaled by sqrt(2), which maps the
    theoretical range of 2-D Perlin noise (+-sqrt(2)/2) to +-1.
    """
    h, w = int(shape[0]), int(shape[1])
    ry, rx = int(res[0]), int(res[1])
    if h < 1 or w < 1:
        raise ValueError(f"shape must be positive, got {shape}")
    if ry < 1 or rx < 1:
        raise ValueError(f"res must be >= 1 per axis, got {res}")
    angles = rng.uniform(0.0, 2.0 * math.pi, size=(ry + 1, rx + 1))
    grad_y = np.cos(angles).astype(np.float32)
    grad_x = np.sin(angles).astype(np.float32)

    # Lattice coordinates of each row / column: integer cell index and fractional position in the cell.
    ys = np.arange(h, dtype=np.float64) * (ry / h)
    xs = np.arange(w, dtype=np.float64) * (rx / w)
    iy = np.minimum(ys.astype(np.intp), ry - 1)
    ix = np.minimum(xs.astype(np.intp), rx - 1)
    fy = (ys - iy).astype(np.float32)[:, None]  # (h, 1)
    fx = (xs - ix).astype(np.float32)[None, :]  # (1, w)

    def corner(row: np.ndarray, col: np.ndarray, dy: float, dx: float) -> np.ndarray:
        """Dot product of each pixel's corner gradient with its offset from that corner, (h, w)."""
        gy = np.take(grad_y[row], col, axis=1)  # gather rows first (small), then columns
        gx = np.take(grad_x[row], col, axis=1)
        gy *= fy - np.float32(dy)
        gx *= fx - np.float32(dx)
        gy += gx
        return gy

    iy1, ix1 = iy + 1, ix + 1
    n00 = corner(iy, ix, 0.0, 0.0)
    n01 = corner(iy, ix1, 0.0, 1.0)
    n10 = corner(iy1, ix, 1.0, 0.0)
    n11 = corner(iy1, ix1, 1.0, 1.0)
    ty = _fade(fy)
    tx = _fade(fx)
    n01 -= n00
    n01 *= tx
    n00 += n01  # top edge, interpolated along x
    n11 -= n10
    n11 *= tx
    n10 += n11  # bottom edge
    n10 -= n00
    n10 *= ty
    n00 += n10
    n00 *= np.float32(math.sqrt(2.0))
    np.clip(n00, -1.0, 1.0, out=n00)  # guards float rounding only
    return n00


def _random_res(rng: np.random.Generator) -> tuple[int, int]:
    lo, hi = PERLIN_SCALE_EXPONENTS
    ey, ex = rng.integers(lo, hi + 1, size=2)
    return 2 ** int(ey), 2 ** int(ex)


def _rotate(image: np.ndarray, angle_deg: float, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Rotate about the centre, same size, borders filled by reflection (no empty corners)."""
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle_deg, 1.0)
    return cv2.warpAffine(image, matrix, (w, h), flags=interpolation, borderMode=cv2.BORDER_REFLECT_101)


def perlin_mask(shape: tuple[int, int], rng: np.random.Generator, threshold: float = 0.5) -> np.ndarray:
    """Binary defect mask (bool, ``shape``) as in DRAEM: random-resolution Perlin noise, rotated, > threshold.

    May be empty (for coarse lattices the noise often stays below the threshold); the simulator redraws.
    """
    noise = perlin_noise(shape, _random_res(rng), rng)
    angle = float(rng.uniform(*PERLIN_ROTATION_DEG))
    noise = _rotate(noise, angle)
    return noise > threshold


def foreground_mask(image: np.ndarray) -> np.ndarray:
    """Foreground of an object-like image (bool H x W): Otsu on grey, then morphological open and close.

    Otsu splits the grey levels into two classes; the class covering most of the image border is taken as
    background, so both bright-object-on-dark and dark-object-on-bright images work. A flat image has no
    foreground (all False).
    """
    if image.ndim == 3:
        grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    else:
        grey = np.ascontiguousarray(image)
    if grey.dtype != np.uint8:
        raise ValueError(f"foreground_mask expects a uint8 image, got {grey.dtype}")
    _, binary = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    border = np.concatenate([binary[0], binary[-1], binary[:, 0], binary[:, -1]])
    if border.mean() > 0.5:  # the bright class is the background
        binary = 1 - binary
    h, w = grey.shape
    k = max(3, int(round(min(h, w) / 50)) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, kernel)
    binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, kernel)
    return binary.astype(bool)


def _fallback_blob(shape: tuple[int, int], rng: np.random.Generator, allowed: np.ndarray | None) -> np.ndarray:
    """A small ellipse, centred on an allowed pixel; never empty (its centre is always included)."""
    h, w = shape
    if allowed is not None and allowed.any():
        ys, xs = np.nonzero(allowed)
        i = int(rng.integers(len(ys)))
        cy, cx = int(ys[i]), int(xs[i])
    else:
        allowed = None
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
    side = min(h, w)
    ay, ax = rng.uniform(max(1.0, side / 20), max(1.5, side / 8), size=2)
    yy = ((np.arange(h) - cy) / ay)[:, None] ** 2
    xx = ((np.arange(w) - cx) / ax)[None, :] ** 2
    blob = (yy + xx) <= 1.0
    if allowed is not None:
        blob &= allowed
    return blob


# ----------------------------------------------------------------------------------------------------------
# Noise images
# ----------------------------------------------------------------------------------------------------------


def shuffle_grid(image: np.ndarray, rng: np.random.Generator, grid: tuple[int, int] = SHUFFLE_GRID) -> np.ndarray:
    """Cut ``image`` into ``grid`` = (rows, cols) equal cells and permute them at random (a new array).

    Cells are ``(H // rows) x (W // cols)``; when the size is not a multiple of the grid the leftover bottom
    rows / right columns stay where they are, so the output is always an exact rearrangement of the input's
    pixels. The permutation is never the identity (when there are at least two cells). Images smaller than
    the grid are returned unchanged (copied).
    """
    rows, cols = grid
    h, w = image.shape[:2]
    ch, cw = h // rows, w // cols
    out = image.copy()
    n = rows * cols
    if ch == 0 or cw == 0 or n < 2:
        return out
    perm = rng.permutation(n)
    while np.array_equal(perm, np.arange(n)):
        perm = rng.permutation(n)
    region = image[: rows * ch, : cols * cw]
    tail = region.shape[2:]
    cells = region.reshape(rows, ch, cols, cw, *tail).swapaxes(1, 2).reshape(n, ch, cw, *tail)
    cells = cells[perm].reshape(rows, cols, ch, cw, *tail).swapaxes(1, 2)
    out[: rows * ch, : cols * cw] = cells.reshape(rows * ch, cols * cw, *tail)
    return out


_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


def color_jitter(
    image: np.ndarray,
    rng: np.random.Generator,
    brightness: float = 0.3,
    contrast: float = 0.3,
    saturation: float = 0.5,
    hue: float = 0.1,
) -> np.ndarray:
    """Random brightness, contrast, saturation and hue change of a uint8 RGB image (torchvision-like ranges).

    Factors are drawn from ``U[1 - x, 1 + x]`` for brightness / contrast / saturation and the hue shift from
    ``U[-hue, hue]`` turns of the colour circle. Hue is rotated and saturation scaled in YIQ space, so the
    whole jitter is one affine colour transform (a single ``cv2.transform``; no lossy HSV round trip).
    """
    b = rng.uniform(1.0 - brightness, 1.0 + brightness)
    c = rng.uniform(1.0 - contrast, 1.0 + contrast)
    s = rng.uniform(1.0 - saturation, 1.0 + saturation)
    theta = 2.0 * math.pi * rng.uniform(-hue, hue)
    cos, sin = math.cos(theta), math.sin(theta)
    chroma = np.array([[1.0, 0.0, 0.0], [0.0, s * cos, -s * sin], [0.0, s * sin, s * cos]])
    colour = b * (_YIQ_TO_RGB @ chroma @ _RGB_TO_YIQ)  # brightness, saturation, hue: linear in RGB
    image = np.ascontiguousarray(image)
    mean_rgb = np.asarray(cv2.mean(image)[:3])
    mean_grey = float(_RGB_TO_YIQ[0] @ (colour @ mean_rgb))  # mean luma after the colour change
    affine = np.hstack([c * colour, np.full((3, 1), (1.0 - c) * mean_grey)])  # contrast about that mean
    return cv2.transform(image, affine)


def _transform_self(image: np.ndarray, rng: np.random.Generator, jitter: bool) -> np.ndarray:
    """MemSeg's structure noise source: mirror, rotate, colour-jitter the image, then shuffle a 4 x 8 grid."""
    out = image
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if rng.random() < 0.5:
        out = out[::-1]
    out = np.ascontiguousarray(out)
    if rng.random() < 0.5:
        out = _rotate(out, float(rng.uniform(-90.0, 90.0)))
    if jitter:
        out = color_jitter(out, rng)
    return shuffle_grid(out, rng)


def _random_colors(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(0.0, 255.0, size=(n, 3)).astype(np.float32)


def _colour_ramp(values: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (H x W) through a piecewise-linear ramp of ``colors`` (n x 3) -> uint8 H x W x 3.

    The ramp is tabulated at 256 levels and applied with a lookup table.
    """
    levels = np.linspace(0.0, 1.0, 256)
    stops = np.linspace(0.0, 1.0, len(colors))
    lut = np.stack([np.interp(levels, stops, colors[:, k]) for k in range(3)], axis=-1)
    lut = np.clip(np.rint(lut), 0, 255).astype(np.uint8).reshape(1, 256, 3)
    q = np.clip(values * np.float32(255.0) + np.float32(0.5), 0, 255).astype(np.uint8)
    return cv2.LUT(cv2.merge([q, q, q]), lut)


def _rotated_coords(shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rotated by a random angle: u (along the pattern) and v (across it), broadcastable."""
    h, w = shape
    theta = rng.uniform(0.0, math.pi)
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    cos, sin = np.float32(math.cos(theta)), np.float32(math.sin(theta))
    return x * cos + y * sin, -x * sin + y * cos


def _texture_fractal(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Coloured fractal Perlin noise: 2-4 octaves, finest lattice cells kept >= 4 px."""
    base = 2 ** int(rng.integers(1, 4))
    octaves = int(rng.integers(2, 5))
    finest = max(1, min(shape) // 4)
    total = np.zeros(shape, np.float32)
    amp = np.float32(1.0)
    for o in range(octaves):
        res = base * 2**o
        if o > 0 and res > finest:
            break
        total += amp * perlin_noise(shape, (res, res), rng)
        amp *= np.float32(0.5)
    lo, hi = float(total.min()), float(total.max())
    values = (total - np.float32(lo)) * np.float32(1.0 / max(hi - lo, 1e-6))
    return _colour_ramp(values, _random_colors(rng, int(rng.integers(2, 5))))


def _texture_stripes(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Parallel stripes at a random angle, hard-edged or sinusoidal."""
    u, _ = _rotated_coords(shape, rng)
    period = rng.uniform(4.0, max(5.0, min(shape) / 4))
    wave = np.sin(u * np.float32(2.0 * math.pi / period) + np.float32(rng.uniform(0, 2 * math.pi)))
    values = (wave > 0).astype(np.float32) if rng.random() < 0.5 else np.float32(0.5) + np.float32(0.5) * wave
    return _colour_ramp(values, _random_colors(rng, 2))


def _texture_checkers(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A checkerboard rotated by a random angle."""
    u, v = _rotated_coords(shape, rng)
    inv_cell = np.float32(1.0 / rng.uniform(4.0, max(5.0, min(shape) / 6)))
    parity = (np.floor(u * inv_cell) + np.floor(v * inv_cell)).astype(np.int32) & 1
    return _colour_ramp(parity.astype(np.float32), _random_colors(rng, 2))


def _texture_blotches(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A coarse grid of random colours, upsampled smoothly (blotches) or blockily (patches)."""
    h, w = shape
    gh, gw = (int(g) for g in rng.integers(2, 17, size=2))
    small = rng.integers(0, 256, size=(gh, gw, 3), dtype=np.uint8)
    interpolation = cv2.INTER_NEAREST if rng.random() < 0.3 else cv2.INTER_CUBIC
    return cv2.resize(small, (w, h), interpolation=interpolation)


def _texture_speckle(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random base colour with uniform per-pixel grain (grey or coloured)."""
    base = rng.uniform(0.0, 255.0, size=3).astype(np.float32)
    amplitude = np.float32(rng.uniform(30.0, 120.0))
    channels = 3 if rng.random() < 0.5 else 1
    grain = rng.random(size=(*shape, channels), dtype=np.float32) - np.float32(0.5)
    out = base + amplitude * grain
    return np.clip(out + np.float32(0.5), 0, 255).astype(np.uint8)


_TEXTURE_FAMILIES: tuple[Callable[[tuple[int, int], np.random.Generator], np.ndarray], ...] = (
    _texture_fractal,
    _texture_stripes,
    _texture_checkers,
    _texture_blotches,
    _texture_speckle,
)


def procedural_texture(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random synthetic texture, uint8 H x W x 3 RGB, used when no texture folder is given.

    Families (chosen uniformly): coloured fractal Perlin noise, stripes (hard or sinusoidal, any angle),
    rotated checkers, smooth or blocky random colour blotches, and coloured or grey grain.
    """
    family = _TEXTURE_FAMILIES[int(rng.integers(len(_TEXTURE_FAMILIES)))]
    return family((int(shape[0]), int(shape[1])), rng)


def _read_image(path: Path) -> np.ndarray | None:
    """Decode an image file to uint8 RGB, or None if OpenCV cannot read it (handles non-ASCII paths)."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# ----------------------------------------------------------------------------------------------------------
# Blend and the simulator
# ----------------------------------------------------------------------------------------------------------


def blend(image: np.ndarray, noise: np.ndarray, mask: np.ndarray, delta: float) -> np.ndarray:
    """``I_A = (1 - M)*I + delta*M*I_n + (1 - delta)*M*I`` (MemSeg eq. 1), rounded to uint8.

    ``image`` and ``noise`` are uint8 H x W x C, ``mask`` H x W (bool or float in [0, 1]). Where the mask is
    0 the output equals ``image`` exactly.
    """
    if image.shape != noise.shape:
        raise ValueError(f"image {image.shape} and noise {noise.shape} differ in shape")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match image {image.shape[:2]}")
    # Whole-image float arithmetic: where the weight is 0 the sum is exactly the integer input, so rounding
    # returns the input unchanged (cheaper than boolean indexing or np.where on a 3-channel image).
    img = image.astype(np.float32)
    weight = mask.astype(np.float32)[..., None]
    weight *= np.float32(delta)
    diff = noise.astype(np.float32)
    diff -= img
    diff *= weight
    img += diff
    np.rint(img, out=img)
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8)


class Simulation(NamedTuple):
    """One simulated sample with the intermediate values (for inspection and tests)."""

    image: np.ndarray  #: augmented image, uint8 H x W x 3
    mask: np.ndarray  #: defect mask, float32 H x W in {0, 1}, never empty
    noise: np.ndarray  #: the noise image I_n, uint8 H x W x 3
    delta: float  #: blend factor
    source: str  #: "texture" or "self"


class DefectSimulator:
    """MemSeg anomaly simulation: Perlin mask (optionally AND foreground), noise image, blend.

    Args:
        texture_dir: folder of texture images (searched recursively for ``IMAGE_EXTENSIONS``, e.g. DTD's
            ``images/``). ``None``: procedurally generated textures.
        use_foreground: restrict the defect to the image foreground (object-like parts); off for textures.
        texture_probability: probability of a texture noise image; otherwise the transformed image itself.
        delta_range: range of the blend factor ``delta``.
        threshold: Perlin threshold for the mask.
        color_jitter: colour-jitter the image in the self (structure) noise branch.

    Texture files are decoded once, resized to the requested size and cached per instance (each DataLoader
    worker fills its own cache: about ``n_files * H * W * 3`` bytes per worker at most). Instances pickle.
    """

    def __init__(
        self,
        texture_dir: Path | None = None,
        *,
        use_foreground: bool = False,
        texture_probability: float = 0.5,
        delta_range: tuple[float, float] = (0.15, 1.0),
        threshold: float = 0.5,
        color_jitter: bool = True,
    ) -> None:
        if not 0.0 <= texture_probability <= 1.0:
            raise ValueError(f"texture_probability must be in [0, 1], got {texture_probability}")
        lo, hi = (float(d) for d in delta_range)
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"delta_range must satisfy 0 <= low <= high <= 1, got {delta_range}")
        self.use_foreground = use_foreground
        self.texture_probability = float(texture_probability)
        self.delta_range = (lo, hi)
        self.threshold = float(threshold)
        self.color_jitter = color_jitter
        self.texture_dir = Path(texture_dir) if texture_dir is not None else None
        self._texture_files: list[Path] = []
        self._cache: dict[tuple[Path, int, int], np.ndarray] = {}
        if self.texture_dir is not None:
            self._texture_files = self._find_textures(self.texture_dir)

    @staticmethod
    def _no_images(folder: Path, why: str) -> ValueError:
        return ValueError(
            f"texture_dir {str(folder)!r} {why}; expected readable image files with one of the extensions "
            f"{', '.join(IMAGE_EXTENSIONS)} (searched recursively)"
        )

    @classmethod
    def _find_textures(cls, folder: Path) -> list[Path]:
        if not folder.is_dir():
            raise cls._no_images(folder, "is not a directory")
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        # Check one file decodes (cheap: normally the first); unreadable ones are dropped again at use time.
        for i, path in enumerate(files):
            if _read_image(path) is not None:
                return files[i:]
        raise cls._no_images(folder, "contains no readable images" if files else "contains no image files")

    def _texture(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        h, w = shape
        if not self._texture_files:
            return procedural_texture(shape, rng)
        while self._texture_files:
            path = self._texture_files[int(rng.integers(len(self._texture_files)))]
            key = (path, h, w)
            cached = self._cache.get(key)
            if cached is None:
                decoded = _read_image(path)
                if decoded is None:  # became unreadable: forget it and draw again
                    self._texture_files.remove(path)
                    continue
                sh, sw = decoded.shape[:2]
                interpolation = cv2.INTER_AREA if sh * sw > h * w else cv2.INTER_LINEAR
                cached = cv2.resize(decoded, (w, h), interpolation=interpolation)
                cached.setflags(write=False)
                self._cache[key] = cached
            out = cached
            if rng.random() < 0.5:
                out = out[:, ::-1]
            if rng.random() < 0.5:
                out = out[::-1]
            return np.ascontiguousarray(out)
        assert self.texture_dir is not None
        raise self._no_images(self.texture_dir, "has no readable images left")

    def _mask(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        shape = image.shape[:2]
        allowed = foreground_mask(image) if self.use_foreground else None
        if allowed is not None and not allowed.any():
            allowed = None  # flat image: no foreground to restrict to
        for _ in range(MASK_RETRIES):
            mask = perlin_mask(shape, rng, self.threshold)
            if allowed is not None:
                mask &= allowed
            if mask.any():
                return mask
        return _fallback_blob(shape, rng, allowed)

    def simulate(self, image: np.ndarray, rng: np.random.Generator) -> Simulation:
        """Simulate one defect on ``image`` (uint8 H x W x 3 RGB) and return it with its intermediates."""
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise ValueError(f"expected a uint8 H x W x 3 RGB image, got {desc}")
        image = np.ascontiguousarray(image)
        mask = self._mask(image, rng)
        if rng.random() < self.texture_probability:
            noise, source = self._texture(image.shape[:2], rng), "texture"
        else:
            noise, source = _transform_self(image, rng, self.color_jitter), "self"
        delta = float(rng.uniform(*self.delta_range))
        augmented = blend(image, noise, mask, delta)
        return Simulation(augmented, mask.astype(np.float32), noise, delta, source)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Return (augmented uint8 H x W x 3, mask float32 H x W in {0, 1}, never empty)."""
        result = self.simulate(image, rng)
        return result.image, result.mask
