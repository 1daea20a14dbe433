"""A loaded network samples in its fastest layout: channels_last with ChannelNorm or in bf16, NCHW with
GroupNorm in fp32; same images."""

import torch

from difforge.pipeline import Pipeline
from difforge.train.trainer import Trainer

from ..conftest import TINY_NET, tiny_overrides


def _conv_weight(pipe):
    return next(m.weight for m in pipe.net.modules() if isinstance(m, torch.nn.Conv2d))


def test_channel_norm_models_sample_channels_last_and_give_the_same_images(tmp_path):
    runs = {}
    for norm in ("channel", "group"):
        runs[norm] = Trainer(progress=False, **tiny_overrides(tmp_path, run=norm, max_steps=3, network_options={**TINY_NET, "norm": norm})).fit()
    pipe = Pipeline.from_checkpoint(runs["channel"].model_file, precision="fp32")
    w = _conv_weight(pipe)
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    out = pipe.generate(num=2, class_label="all", seed=3, steps=4)
    pipe.net = pipe.net.to(memory_format=torch.contiguous_format)  # the same network in NCHW
    assert _conv_weight(pipe).is_contiguous()
    ref = pipe.generate(num=2, class_label="all", seed=3, steps=4)
    assert (out.images.int() - ref.images.int()).abs().max() <= 1  # uint8 images, rounding only
    assert _conv_weight(Pipeline.from_checkpoint(runs["group"].model_file, precision="fp32")).is_contiguous()
    group_bf16 = Pipeline.from_checkpoint(runs["group"].model_file, precision="bf16")
    w = _conv_weight(group_bf16)
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    out = group_bf16.generate(num=2, class_label="all", seed=3, steps=4)
    group_bf16.net = group_bf16.net.to(memory_format=torch.contiguous_format)
    ref = group_bf16.generate(num=2, class_label="all", seed=3, steps=4)
    diff = (out.images.int() - ref.images.int()).abs()
    assert diff.max() <= 8 and diff.float().mean() <= 0.5  # the same images; bf16 kernels of two layouts round differently
