"""DDPM training as a :class:`~difforge.train.tasks.base.Task`: x_t = q_sample(x0, t, noise) and
the configured objective (:mod:`difforge.diffusion.objective`) on the network.

Per-sample terms (metrics.csv columns): ``loss`` (the objective's loss times the timestep
sampler's importance weights), the regression term under its loss name (``mse``, ``l1`` or
``huber``) and ``vb`` (bits/dim) when the objective has the VLB. Previews and evaluation sample
the EMA weights through :class:`difforge.pipeline.Pipeline`, as ``difforge sample`` does.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Dict, Optional

import torch

from ...data import augment, crops
from ...diffusion.objective import Objective, drop_labels
from ...diffusion.schedule import Schedule, schedule_name
from ...diffusion.timestep_samplers import make_timestep_sampler
from ...errors import ConfigError
from ...models import registry
from ...pipeline import Pipeline, SampleConfig
from ..batches import Batch
from ..distributed import all_gather_cat
from ..logging import get_logger
from ..rng import StepRNG
from .base import Snapshot, Task


class DiffusionTask(Task):
    """DDPM training: x_t = q_sample(x0, t, noise) and the configured objective on the network."""

    name = "diffusion"

    def check_data(self, data) -> None:
        if data.num_classes == 1:
            raise ConfigError("a conditional model needs at least two classes; add class folders or use --no-conditional")

    def build(self, data, device: torch.device) -> torch.nn.Module:
        c = self.config
        dc, mc, fc = c.data, c.model, c.diffusion
        options = dict(mc.network_options)
        options.update(image_size=dc.image_size, in_channels=int(data.images.shape[1]), num_classes=data.num_classes, learn_sigma=mc.learn_sigma)
        self.augment = augment.parse(dc.augment) if dc.augment_p > 0 else ()
        self.crop_size = (dc.crop_size or crops.default_size(dc.image_size)) if dc.crop_p > 0 else 0
        for on, flag in ((self.augment, "--augment"), (self.crop_size, "--crop-p")):
            if not on:  # the network is told what was done (EDM app. D.2): zeros at sampling
                continue
            if c.latent.latent:
                raise ConfigError(f"{flag} applies to pixel-space training; drop it for a latent run")
            if "aug_dim" not in registry.options(mc.network):
                raise ConfigError(f"{flag} needs a network with augmentation conditioning (unet, unet-small, unet-tiny), not {mc.network!r}")
        if self.crop_size:
            if mc.text_encoder:
                raise ConfigError("--crop-p would cut away what a caption says (a position, a defect); drop it for a text run")
            if not 8 <= self.crop_size < dc.image_size:
                raise ConfigError(f"crop_size={self.crop_size} must be at least 8 and below the image size {dc.image_size}")
        parts = crops.label_parts(bool(self.augment), bool(self.crop_size))
        if parts:
            options["aug_dim"] = sum(width for _, width in parts.values())
        self.mask_weight = 0.0 if dc.mask_weight == "auto" else dc.mask_weight  # auto is settled before (train/settle.py)
        if self.mask_weight and data.masks is None:
            raise ConfigError("--mask-weight needs the defect masks: --masks MDIR, or --data ROOT/images with ROOT/masks")
        self.text = None
        if mc.text_encoder:  # captions -> the network's cross-attention context (train/text_cond.py)
            from ..text_cond import TextConditioning

            self.text = TextConditioning.prepare(c, data, mc.network)
            options.update(self.text.network_options())
        self.latents = None
        if c.latent.latent:  # the network sees the VAE's scaled latents (train/latent_data.py)
            from ..latent_data import LatentTraining

            self.latents = LatentTraining.prepare(c, data, device, main=self.dist.is_main, log=get_logger())
            options = self.latents.network_options(mc.network, options, mc.network_options, log=get_logger())
        else:
            registry.check_image_size(mc.network, options, dc.image_size)
            if self.crop_size:
                try:
                    registry.check_image_size(mc.network, options, self.crop_size)
                except ConfigError as e:
                    raise ConfigError(f"crop_size={self.crop_size} does not fit the network: {e}") from None
        net = registry.build(mc.network, **options).to(device)
        self.num_classes = data.num_classes
        self.schedule = Schedule.from_settings(fc)
        self.objective = Objective.from_config(self.schedule, fc, learn_sigma=mc.learn_sigma)
        self.timestep_sampler = make_timestep_sampler(fc.schedule_sampler, fc.diffusion_steps)
        self.meta = {
            "kind": "diffusion",
            "network": {"name": mc.network, "config": net.config},
            "diffusion": dict(dataclasses.asdict(fc), learn_sigma=mc.learn_sigma),  # every resolved setting
            "data": {"image_size": dc.image_size, "channels": int(data.images.shape[1]), "class_names": data.class_names},
        }
        if self.latents is not None:  # data.image_size stays in pixels; this links the VAE
            self.meta["latent"] = self.latents.link(Path(c.train.runs_dir) / c.train.run / "checkpoints")
        if c.train.cascade is True:  # the x2 upsampler trained beside this half-size model (train/cascade.py)
            from ..cascade import link

            self.meta["cascade"] = link(c)
        if self.text is not None:  # the vocabulary, or the CLIP folder's path and sha256
            self.meta["text"] = self.text.link(Path(c.train.runs_dir) / c.train.run / "checkpoints")
        return net

    def inputs(self, data, idx, flip, device):
        """Pixels in [-1, 1]; for a latent run the cached posterior (mean, std) stacked on channels; with
        ``mask_weight`` the defect mask (0 / 1) as one more channel, mirrored with its image (split off in :meth:`loss`)."""
        if self.latents is not None:
            return self.latents.inputs(idx, flip, device)
        if not getattr(self, "mask_weight", 0.0):
            return super().inputs(data, idx, flip, device)
        return self.inputs_with_mask(data, data.masks, idx, flip, device)

    def loss(self, net, batch: Batch, rng: StepRNG) -> Dict[str, torch.Tensor]:
        fc = self.config.diffusion
        x = batch.x
        if self.latents is not None:  # a fresh posterior sample s * z per step
            x = self.latents.sample(x, rng.generator, rng.mine, rng.global_batch)
        aug_labels = []  # crops.LABEL_LAYOUT's parts, drawn first, over the global batch, from the step's generator
        if self.crop_size:  # one gate for the whole batch (one tensor), then each image's offset
            gate = float(torch.rand((), generator=rng.generator))
            x, crop_labels = crops.random_crops(x, gate, rng.rand((2,)), self.config.data.crop_p, self.crop_size)
        if self.augment:
            x, labels = augment.augment(x, rng.rand((augment.DRAWS,)), self.augment, self.config.data.augment_p)
            aug_labels.append(labels)
        if self.crop_size:
            aug_labels.append(crop_labels)
        if aug_labels:
            net = functools.partial(net, aug_labels=torch.cat(aug_labels, dim=1))
        weight = None
        if self.mask_weight:  # the mask rode along through crops and augmentations (inputs)
            x, weight = x[:, :-1], x[:, -1:] * self.mask_weight + 1.0  # 1 + W inside a defect, 1 elsewhere
        y = None
        if self.text is not None:  # caption and class dropped together: the unconditional branch of CFG
            from ..text_cond import condition

            y, text = condition(self.text, batch, rng, fc.label_dropout, self.num_classes, x.device, fc.word_dropout,
                                phrase_dropout=fc.phrase_dropout)
            net = functools.partial(net, **text)
        elif batch.labels is not None:
            y = rng.local(drop_labels(batch.labels, fc.label_dropout, self.num_classes, rng.generator), x.device)
        t_all, w_all = self.timestep_sampler.sample(rng.global_batch, rng.generator)
        t, weights = rng.local(t_all, x.device), rng.local(w_all, x.device)
        noise = rng.randn(x.shape[1:], x.device)
        terms = self.objective(net, x, t, noise, y, weight=weight)
        # the importance sampler learns from every rank's unweighted losses (float64 on the CPU)
        per_sample = all_gather_cat(terms["loss"].detach().float(), self.dist)
        self.timestep_sampler.update(all_gather_cat(t, self.dist), per_sample)
        return dict(terms, loss=terms["loss"] * weights)

    def state_tensors(self) -> Dict[str, torch.Tensor]:
        return {f"timestep_sampler/{k}": v for k, v in self.timestep_sampler.state_dict().items()}

    def load_state_tensors(self, tensors: Dict[str, torch.Tensor]) -> None:
        prefix = "timestep_sampler/"
        self.timestep_sampler.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})

    def describe(self) -> str:
        c = self.config
        text = (f"{schedule_name(c.diffusion)}, T={c.diffusion.diffusion_steps}, "
                f"target {c.diffusion.target}, loss {c.diffusion.loss}")
        if self.augment:
            text += f"; augment {','.join(self.augment)} with p={c.data.augment_p:g} (network-conditioned, none in samples)"
        if getattr(self, "crop_size", 0):
            text += (f"; {self.crop_size} px crops in {c.data.crop_p:.0%} of the batches "
                     "(network-conditioned, whole images in samples)")
        if getattr(self, "mask_weight", 0.0):
            text += f"; defect-mask pixels weigh {1 + self.mask_weight:g}x in the loss"
        if getattr(self, "text", None) is not None:
            text += f"; text: {self.text.describe()}"
        if self.latents is not None:
            ch, h, w = self.latents.shape
            text += (f"; latent {ch}x{h}x{w} of the VAE {self.latents.codec.path} "
                     f"(scale factor {self.latents.codec.scale_factor:.4g})")
        return text

    # -- sampling from the EMA network (through the Pipeline, as `difforge sample` does) ----------
    def pipeline(self, snapshot: Snapshot) -> Pipeline:
        """The EMA network of ``snapshot`` as a :class:`~difforge.pipeline.Pipeline` (a latent run decodes with its VAE)."""
        codec = self.latents.codec if self.latents is not None else None
        return Pipeline(snapshot.net, snapshot.meta, snapshot.device, snapshot.precision, source="", codec=codec)

    def sample(self, snapshot: Snapshot, seeds, labels, batch_size: int) -> torch.Tensor:
        """EMA samples as floats in [-1, 1], (N, C, H, W) on the CPU: the sampling defaults, with the
        preview's sampler (when set) and step count."""
        tc = self.config.train
        config = SampleConfig(steps=tc.preview_steps, batch_size=batch_size)
        if tc.preview_sampler:
            config = config.replace(sampler=tc.preview_sampler)
        pipe = self.pipeline(snapshot)
        if getattr(self, "text", None) is not None:  # a text model: training captions (with their classes) in turn
            pipe, labels = self.text.preview_view(pipe, len(seeds))
        return pipe.sample(list(seeds), labels, config)

    def preview(self, snapshot: Snapshot, step: int, data) -> Optional[Path]:
        from ...data.io import make_grid, save_image, to_uint8

        tc = self.config.train
        n = tc.preview_num
        labels = None
        if self.num_classes:
            labels = (torch.arange(n) % self.num_classes).sort(stable=True).values
        x = self.sample(snapshot, range(n), labels, max(n, 1))
        nrow = n // self.num_classes if self.num_classes and n % self.num_classes == 0 else None
        path = snapshot.samples_dir / f"step_{step:07d}.{tc.image_format}"
        save_image(make_grid(to_uint8(x).numpy(), nrow=nrow), path)
        return path

    def evaluate(self, snapshot: Snapshot, step: int, data) -> Dict[str, float]:
        """FID/KID (or other metrics) of ``eval_num`` EMA samples against the real images."""
        from ...data.io import to_uint8
        from ...metrics import evaluate, load_extractor

        tc = self.config.train
        if getattr(self, "_extractor", None) is None:
            self._extractor = load_extractor(tc.eval_features, device=snapshot.device)
        real = tc.eval_real or data.images.permute(0, 2, 3, 1).numpy()
        labels = torch.arange(tc.eval_num) % self.num_classes if self.num_classes else None
        t0 = time.perf_counter()
        x = self.sample(snapshot, range(10**6, 10**6 + tc.eval_num), labels, 64)
        result = evaluate(real, to_uint8(x).numpy(), tc.eval_metrics, self._extractor)
        row = {k: round(float(v), 5) for k, v in result.items() if isinstance(v, (int, float)) and k not in ("num_real", "num_fake")}
        get_logger().info(f"eval at step {step} ({time.perf_counter() - t0:.0f} s): " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()))
        return row


__all__ = ["DiffusionTask"]
