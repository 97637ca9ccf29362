"""Tests for export.metrics against brute-force references and hand-computed cases."""

import numpy as np
import pytest

from export.metrics import auroc, f1_max, pixel_auroc, pro_auc


def brute_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    labels = labels.astype(bool)
    pos, neg = scores[labels], scores[~labels]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (pos.size * neg.size)


def brute_f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    labels = labels.astype(bool)
    best = 0.0
    for t in np.unique(scores):
        pred = scores >= t
        tp = np.sum(pred & labels)
        fp = np.sum(pred & ~labels)
        fn = np.sum(~pred & labels)
        best = max(best, 2 * tp / (2 * tp + fp + fn))
    return best


def brute_pro_auc(masks: np.ndarray, maps: np.ndarray, max_fpr: float, num_thresholds: int) -> float:
    """Threshold loop with scipy's labelling and a segment-by-segment clipped trapezoid."""
    ndimage = pytest.importorskip("scipy.ndimage")
    regions = []
    for i, mask in enumerate(masks):
        labelled, n = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [(i, labelled == k) for k in range(1, n + 1)]
    points = [(0.0, 0.0)]
    for t in np.linspace(maps.min(), maps.max(), num_thresholds):
        pred = maps >= t
        fpr = np.sum(pred & ~masks) / np.sum(~masks)
        pro = np.mean([pred[i][region].mean() for i, region in regions])
        points.append((fpr, pro))
    points.sort()
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:], strict=True):
        if x0 >= max_fpr or x1 == x0:
            continue
        x_end = min(x1, max_fpr)
        y_end = y0 + (y1 - y0) * (x_end - x0) / (x1 - x0)
        area += (x_end - x0) * (y0 + y_end) / 2
    return area / max_fpr


def random_masks(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Blobby random masks: a few random rectangles per image, some images without defects."""
    masks = np.zeros((n, size, size), dtype=bool)
    for mask in masks[: n - 1]:
        for _ in range(rng.integers(1, 4)):
            r, c = rng.integers(0, size - 2, size=2)
            h, w = rng.integers(1, size // 3, size=2)
            mask[r : r + h, c : c + w] = True
    return masks


# --- auroc -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_pairwise_count_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.random(300) < 0.3
    scores = rng.integers(0, 8, size=300) + 1.5 * labels  # few distinct values: many ties across classes
    assert auroc(labels, scores) == pytest.approx(brute_auroc(labels, scores), abs=1e-12)


def test_auroc_continuous_scores_and_any_shape() -> None:
    rng = np.random.default_rng(7)
    labels = (rng.random((4, 5, 6)) < 0.4).astype(np.uint8)
    scores = rng.normal(size=(4, 5, 6)) + labels
    expected = brute_auroc(labels.ravel(), scores.ravel())
    assert auroc(labels, scores) == pytest.approx(expected, abs=1e-12)
    assert auroc(labels.ravel().tolist(), scores.ravel().tolist()) == pytest.approx(expected, abs=1e-12)


def test_auroc_perfect_inverted_and_constant() -> None:
    labels = np.array([0, 0, 1, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.8, 0.3, 0.9, 0.7])
    assert auroc(labels, scores) == 1.0
    assert auroc(labels, -scores) == 0.0
    assert auroc(labels, np.zeros(6)) == 0.5


def test_auroc_handles_infinite_scores() -> None:
    labels = np.array([0, 0, 1, 1])
    scores = np.array([-np.inf, np.inf, np.inf, 1.0])
    assert auroc(labels, scores) == pytest.approx(brute_auroc(labels, scores))


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        ([1, 1, 1], [0.1, 0.2, 0.3], "both classes"),
        ([0, 0, 0], [0.1, 0.2, 0.3], "both classes"),
        ([0, 1, 1], [0.1, 0.2], "length"),
        ([0, 1, 1], [0.1, np.nan, 0.3], "NaN"),
        ([0, 2, 1], [0.1, 0.2, 0.3], "0 and 1"),
    ],
)
def test_auroc_rejects_bad_input(labels: list, scores: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        auroc(labels, scores)


def test_pixel_auroc_equals_flat_auroc_and_checks_shape() -> None:
    rng = np.random.default_rng(3)
    masks = random_masks(rng, 3, 16)
    maps = rng.random((3, 16, 16)) + masks
    assert pixel_auroc(masks, maps) == auroc(masks.ravel(), maps.ravel())
    with pytest.raises(ValueError, match="shape"):
        pixel_auroc(masks[:, :8, :], maps[:, :, :8])


# --- f1_max ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_f1_max_matches_threshold_loop(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    labels = rng.random(200) < 0.2
    scores = np.round(rng.normal(size=200) + labels, 1)  # rounded: ties
    assert f1_max(labels, scores) == pytest.approx(brute_f1_max(labels, scores), abs=1e-12)


def test_f1_max_hand_computed() -> None:
    # Thresholds 0.9 -> P=1, R=1/2, F1=2/3; 0.5 -> P=2/3, R=1, F1=4/5; 0.1 -> P=1/2, R=1, F1=2/3.
    assert f1_max([1, 0, 1, 0], [0.9, 0.5, 0.5, 0.1]) == pytest.approx(0.8)
    assert f1_max([0, 1, 1], [0.1, 0.5, 0.6]) == 1.0


def test_f1_max_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="positive"):
        f1_max([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="length"):
        f1_max([0, 1], [0.1])
    with pytest.raises(ValueError, match="NaN"):
        f1_max([0, 1], [0.1, np.nan])


# --- pro_auc ---------------------------------------------------------------------------------------------


def test_pro_auc_perfect_and_inverted_map() -> None:
    rng = np.random.default_rng(0)
    masks = random_masks(rng, 4, 32)
    # Every defect pixel above every normal one, with a gap wider than the threshold spacing.
    perfect = np.where(masks, 2.0 + rng.random(masks.shape), rng.random(masks.shape))
    assert pro_auc(masks, perfect) == pytest.approx(1.0)
    assert pro_auc(masks, masks.astype(np.float32)) == pytest.approx(1.0)
    assert pro_auc(masks, -perfect) == pytest.approx(0.0)


def test_pro_auc_averages_over_regions_not_pixels() -> None:
    # One image, 100 normal pixels; region A has 4 pixels, region B 16 pixels.
    masks = np.zeros((1, 12, 10), dtype=bool)
    masks[0, 0:2, 0:2] = True  # A
    masks[0, 5:9, 5:9] = True  # B
    maps = np.zeros(masks.shape)
    maps[0, 0:2, 0:2] = 1.0  # A fully above every threshold > 0
    maps[0, 5:7, 5:9] = 1.0  # upper half of B
    maps[0, 7:9, 5:9] = 0.5  # lower half of B: only above thresholds <= 0.5
    normal = np.flatnonzero(~masks.ravel())
    maps.ravel()[normal[:10]] = 0.9  # FPR 0.1 for thresholds in (0.5, 0.9]
    # Curve: (0, 0), (0, 0.75), (0.1, 0.75), (0.1, 1), (1, 1). Mean over regions: (1 + 1/2) / 2 = 0.75;
    # over pixels it would be 12/20 = 0.6. Area up to 0.3: 0.1 * 0.75 + 0.2 * 1 = 0.275.
    assert pro_auc(masks, maps) == pytest.approx(0.275 / 0.3)
    assert pro_auc(masks, maps, max_fpr=1.0) == pytest.approx(0.1 * 0.75 + 0.9)


def test_pro_auc_regions_are_per_image() -> None:
    # The same place in two images must give two regions, of 16 and 4 pixels.
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[0, 0:4, 0:4] = True
    masks[1, 0:2, 0:2] = True
    maps = np.zeros(masks.shape)
    maps[0, 0:4, 0:4] = 1.0
    maps[1, 0:1, 0:2] = 1.0
    maps[1, 1:2, 0:2] = 0.5
    normal = np.flatnonzero(~masks.ravel())  # 108 normal pixels
    maps.ravel()[normal[:27]] = 0.9  # FPR 0.25
    # Per region (1 + 1/2) / 2 = 0.75 until FPR 0.25, then 1: area 0.25 * 0.75 + 0.05.
    assert pro_auc(masks, maps) == pytest.approx((0.25 * 0.75 + 0.05) / 0.3)


def test_pro_auc_uses_8_connectivity() -> None:
    # Two diagonal pixels are one region (half covered), plus a separate single pixel (fully covered):
    # 8-connected PRO = (1/2 + 1) / 2 = 0.75; 4-connected would be (0 + 1 + 1) / 3.
    masks = np.zeros((1, 10, 10), dtype=bool)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 5, 5] = True
    maps = np.zeros(masks.shape)
    maps[0, 0, 0] = maps[0, 5, 5] = 1.0
    maps[0, 1, 1] = 0.5
    normal = np.flatnonzero(~masks.ravel())  # 97 normal pixels
    maps.ravel()[normal[:3]] = 0.9
    a = 3 / 97
    assert pro_auc(masks, maps) == pytest.approx((a * 0.75 + 0.3 - a) / 0.3)


def test_pro_auc_interpolates_at_max_fpr() -> None:
    # 100 normal pixels, 40 of them tied with half of the single region at 0.5; the other half is at 1.0.
    # Curve: (0, 0), (0, 0.5), (0.4, 1), (1, 1); PRO at FPR 0.3 is 0.875.
    masks = np.zeros((1, 12, 10), dtype=bool)
    masks[0, 0:2, :] = True
    maps = np.zeros(masks.shape)
    maps[0, 0, :] = 1.0
    maps[0, 1, :] = 0.5
    maps.ravel()[np.flatnonzero(~masks.ravel())[:40]] = 0.5
    assert pro_auc(masks, maps) == pytest.approx((0.5 + 0.875) / 2)
    assert pro_auc(masks, maps, max_fpr=0.2) == pytest.approx((0.5 + 0.75) / 2)
    assert pro_auc(masks, maps, max_fpr=1.0) == pytest.approx(0.4 * 0.75 + 0.6)


@pytest.mark.parametrize("seed", range(4))
def test_pro_auc_random_in_unit_interval_and_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    masks = random_masks(rng, 4, 24)
    maps = rng.random(masks.shape) + 0.3 * masks
    if seed % 2:
        maps = np.round(maps, 1)  # ties across normal and defect pixels
    for max_fpr, num_thresholds in [(0.3, 200), (0.05, 17), (1.0, 50)]:
        value = pro_auc(masks, maps, max_fpr=max_fpr, num_thresholds=num_thresholds)
        assert 0.0 <= value <= 1.0
        assert value == pytest.approx(brute_pro_auc(masks, maps, max_fpr, num_thresholds), abs=1e-9)


def test_pro_auc_constant_map_is_chance() -> None:
    # Curve (0, 0) to (1, 1): the normalised area up to max_fpr is max_fpr / 2.
    masks = np.zeros((1, 6, 6), dtype=bool)
    masks[0, 2:4, 2:4] = True
    assert pro_auc(masks, np.ones(masks.shape)) == pytest.approx(0.15)
    assert pro_auc(masks, np.ones(masks.shape), max_fpr=1.0) == pytest.approx(0.5)


def test_pro_auc_rejects_bad_input() -> None:
    masks = np.zeros((2, 8, 8), dtype=bool)
    maps = np.random.default_rng(0).random((2, 8, 8))
    with pytest.raises(ValueError, match="no defect region"):
        pro_auc(masks, maps)
    masks[0, 2:4, 2:4] = True
    with pytest.raises(ValueError, match="shape"):
        pro_auc(masks, maps[:, :, :7])
    with pytest.raises(ValueError, match="shape"):
        pro_auc(masks[0], maps[0])
    with pytest.raises(ValueError, match="NaN"):
        pro_auc(masks, np.where(masks, np.nan, maps))
    with pytest.raises(ValueError, match="infinite"):
        pro_auc(masks, np.where(masks, np.inf, maps))
    with pytest.raises(ValueError, match="max_fpr"):
        pro_auc(masks, maps, max_fpr=0.0)
    with pytest.raises(ValueError, match="num_thresholds"):
        pro_auc(masks, maps, num_thresholds=1)
    with pytest.raises(ValueError, match="no normal pixel"):
        pro_auc(np.ones((1, 4, 4), dtype=bool), maps[:1, :4, :4])
    with pytest.raises(ValueError, match="0 and 1"):
        pro_auc(masks * 2, maps)
