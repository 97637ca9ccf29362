import numpy as np

from benchmarks.score_pooling import auroc_by_k, pick_k


def test_wide_pooling_wins_where_good_images_have_single_hot_pixels() -> None:
    rng = np.random.default_rng(0)
    good = rng.uniform(0, 0.1, (20, 16, 16))
    good[np.arange(20), rng.integers(0, 16, 20), rng.integers(0, 16, 20)] = 1.0  # one speck each
    bad = rng.uniform(0, 0.1, (20, 16, 16))
    bad[:, 4:10, 4:10] += 0.5  # a broad, moderate defect
    maps = np.concatenate([good, bad])
    labels = np.array([0] * 20 + [1] * 20)
    by_k = auroc_by_k(labels, maps, ks=(1, 30, 1000))
    assert by_k[0] < 0.5 and by_k[1] == 1.0  # the maximum sees the specks; the mean of 30 sees the defects
    assert by_k[2] == auroc_by_k(labels, maps, ks=(256,))[0]  # k past the map: the whole map


def test_pick_k_takes_the_best_mean_and_the_smallest_k_on_a_tie() -> None:
    assert pick_k([[0.8, 0.9, 0.9], [0.8, 0.9, 0.7]], ks=(1, 10, 100)) == 10
    assert pick_k([[0.9, 0.9], [0.8, 0.8]], ks=(1, 10)) == 1
