"""Tests for export.data.simulation (MemSeg anomaly simulation)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from export.data import simulation
from export.data.simulation import (
    DefectSimulator,
    blend,
    color_jitter,
    foreground_mask,
    perlin_mask,
    perlin_noise,
    procedural_texture,
    shuffle_grid,
)


def _image(h: int = 64, w: int = 96, seed: int = 0) -> np.ndarray:
    """A textured RGB image with distinct pixel values (so permutations and blends are visible)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(yy * 3) % 256, (xx * 5) % 256, (yy + xx) % 256], axis=-1)
    return ((base + rng.integers(0, 40, size=(h, w, 3))) % 256).astype(np.uint8)


def _object_image(h: int = 128, w: int = 128) -> np.ndarray:
    """Dark noisy background with a bright square object in the middle."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 30, size=(h, w, 3)).astype(np.uint8)
    img[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = rng.integers(200, 256, size=(h // 2, w // 2, 3))
    return img


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    buf.tofile(str(path))


# ---------------------------------------------------------------------------------------------------------
# Perlin noise and masks
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "res"),
    [((256, 256), (1, 1)), ((256, 256), (32, 32)), ((100, 150), (4, 8)), ((37, 61), (8, 2)), ((5, 7), (64, 64))],
)
def test_perlin_noise_finite_and_in_range(shape: tuple[int, int], res: tuple[int, int]) -> None:
    noise = perlin_noise(shape, res, np.random.default_rng(0))
    assert noise.shape == shape
    assert noise.dtype == np.float32
    assert np.isfinite(noise).all()
    assert noise.min() >= -1.0 and noise.max() <= 1.0
    assert noise.std() > 0.01  # not degenerate


def test_perlin_noise_is_smooth_and_zero_on_lattice() -> None:
    noise = perlin_noise((128, 128), (4, 4), np.random.default_rng(3))
    # Gradient noise vanishes at lattice points (every 32 px here, starting at 0).
    assert np.abs(noise[::32, ::32]).max() < 1e-6
    # Neighbouring pixels differ little compared with the overall spread.
    assert np.abs(np.diff(noise, axis=0)).max() < 0.2 * (noise.max() - noise.min())
    assert np.abs(np.diff(noise, axis=1)).max() < 0.2 * (noise.max() - noise.min())


def test_perlin_noise_rejects_bad_arguments() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        perlin_noise((10, 10), (0, 1), rng)
    with pytest.raises(ValueError):
        perlin_noise((0, 10), (1, 1), rng)


def test_perlin_noise_reproducible() -> None:
    a = perlin_noise((50, 70), (4, 4), np.random.default_rng(7))
    b = perlin_noise((50, 70), (4, 4), np.random.default_rng(7))
    c = perlin_noise((50, 70), (4, 4), np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_perlin_mask_is_bool_and_threshold_monotone() -> None:
    mask = perlin_mask((100, 150), np.random.default_rng(0))
    assert mask.dtype == bool and mask.shape == (100, 150)
    low = perlin_mask((100, 150), np.random.default_rng(5), threshold=0.1)
    high = perlin_mask((100, 150), np.random.default_rng(5), threshold=0.6)
    assert (high <= low).all()  # same noise, higher threshold -> subset
    assert low.sum() > high.sum()


def test_perlin_masks_vary_in_scale() -> None:
    rng = np.random.default_rng(0)
    areas = [perlin_mask((128, 128), rng).mean() for _ in range(60)]
    assert min(areas) < 0.02 and max(areas) > 0.1


def test_foreground_mask_bright_object() -> None:
    img = _object_image()
    fg = foreground_mask(img)
    assert fg.dtype == bool and fg.shape == img.shape[:2]
    assert fg[40:88, 40:88].all()  # inside the square
    assert not fg[:24].any() and not fg[:, :24].any()  # background far from the square
    assert 0.2 < fg.mean() < 0.3  # about the square's area (1/4)


def test_foreground_mask_dark_object_on_bright_background() -> None:
    fg = foreground_mask(255 - _object_image())
    assert fg[40:88, 40:88].all()
    assert not fg[:24].any()


def test_foreground_mask_removes_specks() -> None:
    img = _object_image()
    img[5, 5] = 255  # a single bright pixel on the background
    assert not foreground_mask(img)[5, 5]


# ---------------------------------------------------------------------------------------------------------
# Noise images and blend
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(64, 96), (100, 150), (33, 17), (3, 5)])
def test_shuffle_grid_is_cell_permutation(shape: tuple[int, int]) -> None:
    img = _image(*shape)
    out = shuffle_grid(img, np.random.default_rng(0))
    assert out.shape == img.shape and out.dtype == img.dtype
    # Same multiset of pixels.
    np.testing.assert_array_equal(np.sort(out.reshape(-1, 3), axis=0), np.sort(img.reshape(-1, 3), axis=0))
    h, w = shape
    ch, cw = h // 4, w // 8
    if ch == 0 or cw == 0:
        np.testing.assert_array_equal(out, img)
        return
    # Leftover rows / columns stay in place.
    np.testing.assert_array_equal(out[4 * ch :], img[4 * ch :])
    np.testing.assert_array_equal(out[:, 8 * cw :], img[:, 8 * cw :])
    # Every output cell is exactly one input cell, each used once, and not all in place.
    cells_in = [img[r * ch : (r + 1) * ch, c * cw : (c + 1) * cw] for r in range(4) for c in range(8)]
    used = []
    for r in range(4):
        for c in range(8):
            cell = out[r * ch : (r + 1) * ch, c * cw : (c + 1) * cw]
            matches = [i for i, src in enumerate(cells_in) if np.array_equal(src, cell)]
            assert len(matches) >= 1
            used.append(next(i for i in matches if i not in used))
    assert sorted(used) == list(range(32))
    assert used != list(range(32))


def test_shuffle_grid_works_on_single_channel() -> None:
    img = _image(40, 40)[..., 0]
    out = shuffle_grid(img, np.random.default_rng(2))
    np.testing.assert_array_equal(np.sort(out, axis=None), np.sort(img, axis=None))


def test_color_jitter_shape_and_change() -> None:
    img = _image()
    out = color_jitter(img, np.random.default_rng(0))
    assert out.shape == img.shape and out.dtype == np.uint8
    assert not np.array_equal(out, img)
    # Zero-strength jitter is the identity.
    same = color_jitter(img, np.random.default_rng(0), brightness=0, contrast=0, saturation=0, hue=0)
    np.testing.assert_array_equal(same, img)
    # Grey stays grey under saturation / hue changes; brightness-only jitter scales values.
    grey = np.repeat(img[..., :1], 3, axis=2)
    out = color_jitter(grey, np.random.default_rng(1), brightness=0, contrast=0)
    assert np.abs(out.astype(int) - grey.astype(int)).max() <= 1
    bright = color_jitter(img, np.random.default_rng(2), contrast=0, saturation=0, hue=0)
    ratio = bright[img > 20].astype(float) / img[img > 20]
    assert ratio.std() < 0.05 and abs(ratio.mean() - 1) > 0.01


def test_procedural_textures_valid_and_varied() -> None:
    rng = np.random.default_rng(0)
    textures = [procedural_texture((100, 150), rng) for _ in range(40)]
    for tex in textures:
        assert tex.shape == (100, 150, 3) and tex.dtype == np.uint8
    assert np.mean([tex.std() > 5 for tex in textures]) > 0.9
    # Different draws differ.
    assert len({tex.tobytes() for tex in textures}) == len(textures)


@pytest.mark.parametrize("family", simulation._TEXTURE_FAMILIES)
def test_each_texture_family(family) -> None:
    tex = family((50, 70), np.random.default_rng(4))
    assert tex.shape == (50, 70, 3) and tex.dtype == np.uint8


@pytest.mark.parametrize("delta", [0.15, 0.5, 1.0])
def test_blend_matches_formula(delta: float) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(40, 60, 3), dtype=np.uint8)
    noise = rng.integers(0, 256, size=(40, 60, 3), dtype=np.uint8)
    mask = rng.random((40, 60)) < 0.4
    out = blend(img, noise, mask, delta)
    m = mask.astype(np.float64)[..., None]
    i, n = img.astype(np.float64), noise.astype(np.float64)
    expected = (1 - m) * i + delta * m * n + (1 - delta) * m * i
    assert out.dtype == np.uint8
    assert np.abs(out - expected).max() <= 0.5 + 1e-6
    np.testing.assert_array_equal(out[~mask], img[~mask])
    if delta == 1.0:
        np.testing.assert_array_equal(out[mask], noise[mask])


def test_blend_rejects_mismatched_shapes() -> None:
    img = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ValueError):
        blend(img, np.zeros((10, 11, 3), np.uint8), np.zeros((10, 10), bool), 0.5)
    with pytest.raises(ValueError):
        blend(img, img, np.zeros((10, 11), bool), 0.5)


# ---------------------------------------------------------------------------------------------------------
# DefectSimulator
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(256, 256), (100, 150), (61, 37)])
@pytest.mark.parametrize("use_foreground", [False, True])
def test_simulator_output_contract(shape: tuple[int, int], use_foreground: bool) -> None:
    img = _image(*shape) if not use_foreground else cv2.resize(_object_image(), (shape[1], shape[0]))
    sim = DefectSimulator(use_foreground=use_foreground)
    rng = np.random.default_rng(0)
    for _ in range(15):
        out, mask = sim(img, rng)
        assert out.shape == img.shape and out.dtype == np.uint8
        assert mask.shape == shape and mask.dtype == np.float32
        assert set(np.unique(mask).tolist()) <= {0.0, 1.0}
        assert mask.sum() > 0
        outside = mask == 0
        np.testing.assert_array_equal(out[outside], img[outside])


def test_simulate_blend_consistent_with_delta() -> None:
    img = _image(80, 120)
    sim = DefectSimulator()
    rng = np.random.default_rng(3)
    sources = set()
    for _ in range(30):
        res = sim.simulate(img, rng)
        sources.add(res.source)
        assert 0.15 <= res.delta <= 1.0
        inside = res.mask == 1
        i = img[inside].astype(np.float64)
        n = res.noise[inside].astype(np.float64)
        a = res.image[inside].astype(np.float64)
        lo, hi = np.minimum(i, n), np.maximum(i, n)
        assert (a >= lo - 0.5).all() and (a <= hi + 0.5).all()
        np.testing.assert_allclose(a, i + res.delta * (n - i), atol=0.5 + 1e-6)
        # And the effective blend factor, where I and I_n differ a lot, is the reported delta.
        big = np.abs(n - i) > 60
        if big.any():
            est = (a[big] - i[big]) / (n[big] - i[big])
            assert est.min() >= 0.15 - 0.01 and est.max() <= 1.0 + 0.01
    assert sources == {"texture", "self"}


def test_reproducible_and_seed_dependent() -> None:
    img = _image(100, 150)
    sim = DefectSimulator(use_foreground=False)
    a_img, a_mask = sim(img, np.random.default_rng(42))
    b_img, b_mask = sim(img, np.random.default_rng(42))
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_mask, b_mask)
    c_img, c_mask = sim(img, np.random.default_rng(43))
    assert not (np.array_equal(a_img, c_img) and np.array_equal(a_mask, c_mask))
    # A sequence of draws from one generator is reproducible too.
    r1, r2 = np.random.default_rng(1), np.random.default_rng(1)
    for _ in range(5):
        x, y = sim(img, r1), sim(img, r2)
        np.testing.assert_array_equal(x[0], y[0])
        np.testing.assert_array_equal(x[1], y[1])


def test_does_not_touch_global_random_state() -> None:
    img = _image()
    state = np.random.get_state()
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    DefectSimulator()(img, np.random.default_rng(0))
    assert np.random.random() == before
    np.random.set_state(state)


def test_input_not_modified() -> None:
    img = _image()
    copy = img.copy()
    DefectSimulator()(img, np.random.default_rng(0))
    np.testing.assert_array_equal(img, copy)


def test_foreground_restricts_mask() -> None:
    img = _object_image()
    fg = foreground_mask(img)
    sim = DefectSimulator(use_foreground=True)
    rng = np.random.default_rng(0)
    outside_free = 0.0
    for _ in range(40):
        _, mask = sim(img, rng)
        assert mask.sum() > 0
        assert not mask[~fg].any()
        assert not mask[:24].any()
    # Without the restriction, defects do land on the background.
    plain = DefectSimulator(use_foreground=False)
    for _ in range(40):
        _, mask = plain(img, rng)
        outside_free += mask[~fg].sum()
    assert outside_free > 0


def test_foreground_on_flat_image_still_gives_defect() -> None:
    img = np.full((64, 64, 3), 128, np.uint8)
    sim = DefectSimulator(use_foreground=True)
    rng = np.random.default_rng(0)
    for _ in range(10):
        _, mask = sim(img, rng)
        assert mask.sum() > 0


def test_empty_masks_fall_back_to_blob() -> None:
    sim = DefectSimulator(threshold=1.5)  # Perlin noise never exceeds 1: every draw is empty
    img = _image(100, 150)
    rng = np.random.default_rng(0)
    for _ in range(5):
        out, mask = sim(img, rng)
        assert mask.sum() > 0
        np.testing.assert_array_equal(out[mask == 0], img[mask == 0])
    # With a foreground restriction the blob stays on the object.
    obj = _object_image()
    fg = foreground_mask(obj)
    sim_fg = DefectSimulator(threshold=1.5, use_foreground=True)
    for _ in range(5):
        _, mask = sim_fg(obj, rng)
        assert mask.sum() > 0 and not mask[~fg].any()


def test_self_branch_without_jitter_is_pixel_rearrangement() -> None:
    img = _image(64, 96)
    sim = DefectSimulator(texture_probability=0.0, color_jitter=False)
    rng = np.random.default_rng(0)
    for _ in range(10):
        res = sim.simulate(img, rng)
        assert res.source == "self"
        assert res.noise.shape == img.shape
    # Without rotation (flip + shuffle only) the pixel multiset is preserved exactly.
    rng = np.random.default_rng(5)
    preserved = 0
    for _ in range(20):
        noise = simulation._transform_self(img, rng, jitter=False)
        preserved += np.array_equal(np.sort(noise.reshape(-1, 3), axis=0), np.sort(img.reshape(-1, 3), axis=0))
    assert preserved > 0


def test_texture_probability_one_uses_textures_only() -> None:
    sim = DefectSimulator(texture_probability=1.0)
    rng = np.random.default_rng(0)
    assert {sim.simulate(_image(), rng).source for _ in range(10)} == {"texture"}


def test_texture_dir_empty_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no image files") as info:
        DefectSimulator(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert ".png" in str(info.value)


def test_texture_dir_unreadable_images_raise(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="no readable images"):
        DefectSimulator(tmp_path)


def test_texture_dir_missing_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        DefectSimulator(tmp_path / "nope")


def test_invalid_arguments_raise() -> None:
    with pytest.raises(ValueError):
        DefectSimulator(texture_probability=1.5)
    with pytest.raises(ValueError):
        DefectSimulator(delta_range=(0.8, 0.2))
    sim = DefectSimulator()
    with pytest.raises(ValueError):
        sim(np.zeros((10, 10), np.uint8), np.random.default_rng(0))
    with pytest.raises(ValueError):
        sim(np.zeros((10, 10, 3), np.float32), np.random.default_rng(0))


def test_texture_dir_used_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    sub = tmp_path / "class_a"
    sub.mkdir()
    for k, colour in enumerate(colours):
        tex = np.empty((30 + k, 50, 3), np.uint8)
        tex[:] = colour
        _write_png((sub if k else tmp_path) / f"tex{k}.PNG", tex)  # recursive, case-insensitive suffix
    (tmp_path / "broken.jpg").write_bytes(b"junk")

    calls: list[Path] = []
    real_read = simulation._read_image

    def counting_read(path: Path) -> np.ndarray | None:
        calls.append(path)
        return real_read(path)

    monkeypatch.setattr(simulation, "_read_image", counting_read)
    sim = DefectSimulator(tmp_path, texture_probability=1.0)
    calls.clear()
    img = _image(100, 150)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(60):
        res = sim.simulate(img, rng)
        assert res.source == "texture"
        assert res.noise.shape == img.shape
        colour = tuple(int(v) for v in res.noise[0, 0])
        assert colour in colours
        np.testing.assert_array_equal(res.noise, np.broadcast_to(np.array(colour, np.uint8), img.shape))
        seen.add(colour)
    assert seen == set(colours)
    # Each readable file decoded once; the broken one at most once, then dropped.
    assert all(calls.count(p) == 1 for p in set(calls))
    assert len(calls) <= 4


def test_simulator_is_picklable() -> None:
    import pickle

    sim = DefectSimulator(use_foreground=True, texture_probability=0.3)
    clone = pickle.loads(pickle.dumps(sim))
    img = _image()
    a, b = sim(img, np.random.default_rng(9)), clone(img, np.random.default_rng(9))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
