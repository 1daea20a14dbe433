"""Crop training (Patch Diffusion): each crop is the image's pixels at its label's offset; no crop
when the batch's gate is at or above p."""

import torch

from difforge.data.crops import CROP_DIM, default_size, random_crops


def test_each_crop_is_the_image_at_its_labelled_offset():
    x = torch.randn(5, 3, 16, 12)
    where = torch.tensor([[0.0, 0.0], [0.999, 0.999], [0.5, 0.25], [0.2, 0.9], [1.0, 1.0]])
    out, lab = random_crops(x, gate=0.1, where=where, p=0.5, size=8)
    assert out.shape == (5, 3, 8, 8) and lab.shape == (5, CROP_DIM)
    assert lab[:, 0].tolist() == [1.0] * 5
    lefts, tops = (lab[:, 1] * 12).round().long(), (lab[:, 2] * 16).round().long()
    assert lefts.tolist() == [0, 4, 2, 1, 4] and tops.tolist() == [0, 8, 2, 8, 8]  # every offset reachable, none outside
    for i in range(5):
        t, l = int(tops[i]), int(lefts[i])
        assert torch.equal(out[i], x[i, :, t:t + 8, l:l + 8])


def test_gate_at_or_above_p_leaves_the_batch_whole():
    x = torch.randn(3, 1, 16, 16)
    out, lab = random_crops(x, gate=0.5, where=torch.rand(3, 2), p=0.5, size=8)
    assert out is x and not lab.any()


def test_channels_last_stays_channels_last():
    x = torch.randn(2, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    out, _ = random_crops(x, gate=0.0, where=torch.rand(2, 2), p=1.0, size=8)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert default_size(64) == 32
