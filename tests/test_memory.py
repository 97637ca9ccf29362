"""The vectorised memory lookup equals a naive loop over the memory samples, scale by scale."""

import torch

from export.nn.memory import MemoryBank, nearest_difference, smooth


def naive_nearest(features: torch.Tensor, bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    diffs, indices = [], []
    for x in features:
        best, best_sum = None, None
        for n, m in enumerate(bank):
            total = float((m - x).abs().sum())
            if best_sum is None or total < best_sum:
                best, best_sum = n, total
        diffs.append((bank[best] - x).abs())
        indices.append(best)
    return torch.stack(diffs), torch.tensor(indices)


def test_vectorised_lookup_equals_naive_loop() -> None:
    generator = torch.Generator().manual_seed(0)
    bank = torch.randn(7, 16, 8, 8, generator=generator)
    features = torch.randn(5, 16, 8, 8, generator=generator)
    features[2] = bank[4] + 0.01  # one input right next to a known sample
    diff, index = nearest_difference(features, bank)
    naive_diff, naive_index = naive_nearest(features, bank)
    assert torch.equal(index, naive_index)
    assert index[2] == 4
    torch.testing.assert_close(diff, naive_diff)


def test_bank_picks_the_nearest_sample_per_scale_independently() -> None:
    generator = torch.Generator().manual_seed(1)
    bank = MemoryBank((4, 8, 16), size=64, samples=3)
    stored = [torch.randn(3, c, 64 // (4 << i), 64 // (4 << i), generator=generator) for i, c in enumerate((4, 8, 16))]
    bank.store(stored)
    # The input matches sample 0 at scale 0, sample 1 at scale 1, sample 2 at scale 2.
    features = [stored[0][0:1], stored[1][1:2], stored[2][2:3]]
    for d in bank.differences(features):
        assert float(d.abs().max()) == 0.0
    for scale, (f, m) in enumerate(zip(features, bank.features(), strict=True)):
        assert int(nearest_difference(f, m)[1]) == scale


def test_smoothing_is_a_3x3_mean_with_zero_padding() -> None:
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 9.0
    y = smooth([x])[0]
    assert y.shape == x.shape
    assert torch.allclose(y[0, 0, 1:4, 1:4], torch.ones(3, 3))
    assert float(y[0, 0, 0, 0]) == 0.0
