"""EDM-style augmentation: what is done matches its label; nothing is done at p = 0."""

import torch

from difforge.data.augment import AUG_DIM, DRAWS, augment


def test_labels_describe_the_transform():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    u = torch.tensor([[0.0, 0.0, 1, 1, 1, 1, 1, 1, 1], [1.0] * DRAWS])  # row 0: x-flip only; row 1: nothing
    out, lab = augment(x, u, ("flips", "rot90", "translate"), 0.5)
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[1], x[1])
    assert lab.tolist() == [[1, 0, 0, 0, 0, 0], [0] * AUG_DIM]
    u = torch.tensor([[1, 1, 1, 1, 0.0, 0.3, 1, 1, 1]])  # rot90 with k = 1
    out, lab = augment(x[:1], u, ("rot90",), 0.5)
    assert torch.equal(out[0], torch.rot90(x[0], 1, dims=(-2, -1)))
    assert lab[0, 2:4].tolist() == [-1.0, 1.0]
    u = torch.tensor([[1, 1, 1, 1, 1, 1, 0.0, 1.0, 0.5]])  # shift right by 1 (8 px / 8)
    out, lab = augment(x[:1], u, ("translate",), 0.5)
    assert torch.equal(out[0, :, :, 1:], x[0, :, :, :-1]) and lab[0, 4].item() == 1 / 8


def test_p_zero_changes_nothing():
    x = torch.randn(4, 3, 16, 16)
    out, lab = augment(x, torch.rand(4, DRAWS), ("flips", "rot90", "translate"), 0.0)
    assert torch.equal(out, x) and not lab.any()
