"""What one kind of model needs from the shared training loop: the ``Task`` seam.

The :class:`~difforge.train.trainer.Trainer` owns everything every model kind shares: data in
RAM, the batch plan (and so the data order, also under DDP), counter-based randomness, the
optimizer and LR schedule, precision, gradient accumulation and clipping, EMA, checkpoints,
resume, Ctrl-C, time budgets, metrics.csv and the log. A task owns what differs: which network
is built, how a micro-batch becomes a loss, what a preview shows and what an evaluation measures.
A diffusion model, a VAE and a noisy classifier are three tasks over the same loop.

The contract (all methods are called on every rank unless said otherwise):

- ``check_data(data)``: raise a :class:`~difforge.errors.ConfigError` for data the task cannot use.
- ``build(data, device) -> nn.Module``: the network to train, on ``device``. Also sets
  ``self.meta``: the self-description written into every model file (``meta["kind"]`` names the
  task; ``network`` / ``data`` entries as the diffusion task writes them).
- ``inputs(data, idx, flip, device) -> Tensor``: the float inputs of dataset rows ``idx`` with
  the per-image horizontal-flip mask ``flip`` (default: uint8 pixels to [-1, 1]).
- ``loss(net, x, labels, g, mine, global_batch, autocast) -> Tensor``: the scalar loss of one
  micro-batch, for backward. Random draws must come from the generator ``g`` and cover the
  *global* batch (then keep ``[mine]``, this rank's slice), so that results do not depend on the
  number of processes. ``labels`` are the global batch's labels (None when unconditional).
- ``state_tensors() / load_state_tensors(d)``: extra tensors a resumed run needs (e.g. the
  importance sampler's loss history); stored in the training-state file.
- ``preview(trainer, step, data) -> Path or None`` (rank 0 only): a picture of progress.
- ``evaluate(trainer, step, data) -> dict`` (rank 0 only; every ``eval_every`` steps): numbers
  for metrics.csv.
- ``describe() -> str``: one log line about the model.

Tasks are looked up by the config's ``train.task`` name; modules load on first use, so a new
task is one module plus one entry in :data:`TASK_MODULES`.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
import time
from pathlib import Path
from typing import Callable, Dict, Optional

import torch

from ..config import Config
from ..diffusion.denoiser import Denoiser
from ..diffusion.objective import Objective, drop_labels
from ..diffusion.sampling import sample_images
from ..diffusion.schedule import Schedule
from ..diffusion.timestep_samplers import make_timestep_sampler
from ..errors import ConfigError
from ..models import registry
from .distributed import DistInfo, all_gather_cat

# task name -> "module:Class", imported on first use
TASK_MODULES: Dict[str, str] = {
    "diffusion": "difforge.train.task:DiffusionTask",
    "vae": "difforge.train.vae_task:VAETask",
    "classifier": "difforge.train.classifier_task:ClassifierTask",
}


def make_task(config: Config, dist: Optional[DistInfo] = None) -> "Task":
    """The task named by ``config.train.task``."""
    name = config.train.task
    if name not in TASK_MODULES:
        raise ConfigError(f"task={name!r} is not known; choose one of {', '.join(TASK_MODULES)}")
    module, cls = TASK_MODULES[name].split(":")
    return getattr(importlib.import_module(module), cls)(config, dist or DistInfo())


class Task(abc.ABC):
    """Base class: pixel inputs, no extra state, no preview or evaluation; a task must say how to
    build its network and what its loss is."""

    name = "task"

    def __init__(self, config: Config, dist: DistInfo):
        self.config = config
        self.dist = dist
        self.meta: Dict = {}

    def check_data(self, data) -> None:
        pass

    @abc.abstractmethod
    def build(self, data, device: torch.device) -> torch.nn.Module:
        """The network to train, on ``device``; also sets ``self.meta``."""

    def inputs(self, data, idx: torch.Tensor, flip: torch.Tensor, device: torch.device) -> torch.Tensor:
        x = data.images[idx].to(device, non_blocking=True).float().div_(127.5).sub_(1.0)
        if self.config.data.hflip:
            f = flip.to(device)
            x[f] = x[f].flip(-1)
        return x

    @abc.abstractmethod
    def loss(self, net, x, labels, g, mine, global_batch, autocast: Callable) -> torch.Tensor:
        """The scalar loss of one micro-batch (random draws from ``g`` over the global batch)."""

    def state_tensors(self) -> Dict[str, torch.Tensor]:
        return {}

    def load_state_tensors(self, tensors: Dict[str, torch.Tensor]) -> None:
        pass

    def preview(self, trainer, step: int, data) -> Optional[Path]:
        return None

    def evaluate(self, trainer, step: int, data) -> Dict[str, float]:
        return {}

    def describe(self) -> str:
        return f"task {self.name}"


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
        options.update(image_size=dc.image_size, in_channels=dc.channels, num_classes=data.num_classes, learn_sigma=mc.learn_sigma)
        self.latents = None
        if c.latent.latent:  # the network sees the VAE's scaled latents (difforge/latent.py)
            from ..latent import LatentTraining
            from .logging import get_logger

            self.latents = LatentTraining.prepare(c, data, device, main=self.dist.is_main, log=get_logger())
            options = self.latents.network_options(mc.network, options, mc.network_options, log=get_logger())
        else:
            registry.check_image_size(mc.network, options, dc.image_size)
        net = registry.build(mc.network, **options).to(device)
        self.num_classes = data.num_classes
        self.schedule = Schedule.named(fc.noise_schedule, fc.diffusion_steps)
        self.objective = Objective.from_config(self.schedule, fc, learn_sigma=mc.learn_sigma)
        self.timestep_sampler = make_timestep_sampler(fc.schedule_sampler, fc.diffusion_steps)
        self.meta = {
            "kind": "diffusion",
            "network": {"name": mc.network, "config": net.config},
            "diffusion": dict(dataclasses.asdict(fc), learn_sigma=mc.learn_sigma),  # every resolved setting
            "data": {"image_size": dc.image_size, "channels": dc.channels, "class_names": data.class_names},
        }
        if self.latents is not None:  # data.image_size stays in pixels; this links the VAE
            self.meta["latent"] = self.latents.link(Path(c.train.runs_dir) / c.train.run / "checkpoints")
        return net

    def inputs(self, data, idx, flip, device):
        """Pixels in [-1, 1]; for a latent run the cached posterior (mean, std) stacked on channels."""
        if self.latents is None:
            return super().inputs(data, idx, flip, device)
        return self.latents.inputs(idx, flip, device)

    def loss(self, net, x, labels, g, mine, global_batch, autocast) -> torch.Tensor:
        fc = self.config.diffusion
        if self.latents is not None:  # a fresh posterior sample s * z per step
            x = self.latents.sample(x, g, mine, global_batch)
        y = None
        if labels is not None:
            y = drop_labels(labels, fc.label_dropout, self.num_classes, g)[mine].to(x.device)
        t_all, w_all = self.timestep_sampler.sample(global_batch, g)
        t, weights = t_all[mine].to(x.device), w_all[mine].to(x.device)
        noise = torch.randn((global_batch, *x.shape[1:]), generator=g)[mine].to(x.device)
        with autocast():
            terms = self.objective(net, x, t, noise, y)
        per_sample = all_gather_cat(terms["loss"].detach().float(), self.dist)
        self.timestep_sampler.update(all_gather_cat(t, self.dist), per_sample)
        return (terms["loss"] * weights).mean()

    def state_tensors(self) -> Dict[str, torch.Tensor]:
        return {f"timestep_sampler/{k}": v for k, v in self.timestep_sampler.state_dict().items()}

    def load_state_tensors(self, tensors: Dict[str, torch.Tensor]) -> None:
        prefix = "timestep_sampler/"
        self.timestep_sampler.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})

    def describe(self) -> str:
        c = self.config
        text = (f"{c.diffusion.noise_schedule} schedule, T={c.diffusion.diffusion_steps}, "
                f"target {c.diffusion.target}, loss {c.diffusion.loss}")
        if self.latents is not None:
            ch, h, w = self.latents.shape
            text += (f"; latent {ch}x{h}x{w} of the VAE {self.latents.codec.path} "
                     f"(scale factor {self.latents.codec.scale_factor:.4g})")
        return text

    # -- sampling from the EMA network ----------------------------------------------------------
    def ema_denoiser(self, trainer) -> Denoiser:
        """The EMA network as a sampler sees it (CFG 3 for conditional models), for previews and eval."""
        return Denoiser(
            trainer.ema.shadow,
            self.schedule,
            target=self.config.diffusion.target,
            learn_sigma=self.config.model.learn_sigma,
            num_classes=self.num_classes,
            cfg_scale=3.0 if self.num_classes else 1.0,
            clip_x0=self.latents is None,  # latents are not bounded to [-1, 1]
            autocast=trainer.autocast,
        )

    def sample(self, trainer, seeds, labels, batch_size: int) -> torch.Tensor:
        """EMA samples as floats in [-1, 1], (N, C, H, W) (what previews and evaluation look at)."""
        tc, dc = self.config.train, self.config.data
        x = sample_images(
            self.ema_denoiser(trainer),
            shape=self.latents.shape if self.latents is not None else (dc.channels, dc.image_size, dc.image_size),
            seeds=list(seeds),
            labels=labels,
            sampler=tc.preview_sampler,
            steps=tc.preview_steps,
            batch_size=batch_size,
            device=trainer.device,
            clamp=self.latents is None,
        )
        return x if self.latents is None else self.latents.codec.decode(x).cpu()

    def preview(self, trainer, step: int, data) -> Optional[Path]:
        from ..data.io import make_grid, save_image, to_uint8

        tc = self.config.train
        n = tc.preview_num
        labels = None
        if self.num_classes:
            labels = (torch.arange(n) % self.num_classes).sort(stable=True).values
        x = self.sample(trainer, range(n), labels, max(n, 1))
        nrow = n // self.num_classes if self.num_classes and n % self.num_classes == 0 else None
        path = trainer.run_dir / "samples" / f"step_{step:07d}.{tc.image_format}"
        save_image(make_grid(to_uint8(x).numpy(), nrow=nrow), path)
        return path

    def evaluate(self, trainer, step: int, data) -> Dict[str, float]:
        """FID/KID (or other metrics) of ``eval_num`` EMA samples against the real images."""
        from ..data.io import to_uint8
        from ..metrics import evaluate, load_extractor

        tc = self.config.train
        if getattr(self, "_extractor", None) is None:
            self._extractor = load_extractor(tc.eval_features, device=trainer.device)
        real = tc.eval_real or data.images.permute(0, 2, 3, 1).numpy()
        labels = torch.arange(tc.eval_num) % self.num_classes if self.num_classes else None
        t0 = time.perf_counter()
        x = self.sample(trainer, range(10**6, 10**6 + tc.eval_num), labels, 64)
        result = evaluate(real, to_uint8(x).numpy(), tc.eval_metrics, self._extractor)
        row = {k: round(float(v), 5) for k, v in result.items() if isinstance(v, (int, float)) and k not in ("num_real", "num_fake")}
        trainer.log.info(f"eval at step {step} ({time.perf_counter() - t0:.0f} s): " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()))
        return row


__all__ = ["Task", "DiffusionTask", "make_task", "TASK_MODULES"]
