"""What a run decides from its data before the network is built: ``channels: auto`` (from the
images), ``lr: auto`` (:func:`~difforge.train.optim.choose_lr`), the defect masks a ``mask_weight`` run weighs (:mod:`difforge.train.loss_masks`), the images held out to choose the EMA (:mod:`difforge.train.validation`) and
``network: auto``, a UNet's patch size, a built-in text run's layout map and
``channels_last: auto`` (:mod:`difforge.train.autonet`); ``compile``: a forced compile's toolchain
is checked, ``auto`` becomes a timed trial or off (:mod:`difforge.train.compiling`). The decisions go into the config, so
config.yaml records them and a resumed run makes none of them again (but a trial: its timings are the machine's of
the moment, so a resumed ``compile: auto`` run times its own)."""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import torch

from ..config import Config
from ..data.source import TrainingImages
from .loss_masks import choose_mask_weight, with_loss_masks
from .optim import choose_lr
from .validation import hold_out


def settle_run(config: Config, data: TrainingImages, task, dist=None, new: bool = True,
               pretrain: Optional[str] = None) -> Tuple[Config, TrainingImages, Optional[TrainingImages]]:
    """``(config, training images, held-out images or None)``; the task gets the settled config.
    ``new``: False when resuming (the run keeps the network its checkpoint has); ``pretrain``: a
    fine-tune's model file (its network's fold is kept)."""
    if config.data.channels == "auto":
        if config.latent.latent and config.latent.vae:  # the VAE's channels decide a latent run
            data = _to_channels(data, _vae_channels(config.latent.vae, data.channels))
        config = config.override(channels=data.channels)
    config = choose_mask_weight(config, new)
    data = with_loss_masks(config, data)  # before the hold-out, which slices them with the images
    val = None
    # text runs keep every image: the held-out loss (validation.py) is computed without captions
    if config.train.ema_select and config.train.task == "diffusion" and not config.latent.latent and not config.model.text_encoder:
        data, val = hold_out(data, config.train.seed)
    from .autonet import INPUT_WIDTH, choose_memory_format, choose_network, choose_patch, choose_text_defaults
    from .compiling import choose_compile

    if new and config.train.task in INPUT_WIDTH:
        config = choose_patch(config, data, pretrain)
    if new and config.train.task in ("diffusion", "joint"):  # a joint image+mask text model places as a plain one does
        config = choose_text_defaults(config, pretrain)
    if config.model.network == "auto":
        config = choose_network(config, data, task, dist)
    config = choose_lr(config, pretrain)  # after the network: the larger step was measured on unet-tiny only
    if config.train.channels_last == "auto":
        config = choose_memory_format(config, data, dist)
    config = choose_compile(config, dist)
    task.config = config
    return config, data, val


def _vae_channels(path: str, fallback: int) -> int:
    from ..errors import UserError
    from ..modelfile import read_metadata

    try:
        return int(read_metadata(path)["data"]["channels"])
    except (UserError, KeyError, TypeError, ValueError):
        return fallback  # the latent set-up names what is wrong with the file


def _to_channels(data: TrainingImages, channels: int) -> TrainingImages:
    """Grey images repeated to RGB, or RGB to grey (ITU-R 601 luma), for a VAE of the other kind."""
    x = data.images
    if channels == x.shape[1]:
        return data
    if channels == 3:
        x = x.expand(-1, 3, -1, -1).contiguous()
    else:
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        x = (x.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    return dataclasses.replace(data, images=x)


__all__ = ["settle_run"]
