"""Training the noisy classifier of classifier guidance with the shared loop (``train.task = classifier``).

Dhariwal & Nichol 2021 (sec. 4.1): the classifier p(y | x_t) sees the images the sampler sees,
x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps with t ~ U{0, ..., T-1}, under the *same* schedule
(name and T) as the diffusion model it will guide; the model file records it, and guidance
refuses a classifier of another schedule. The loss is the cross-entropy of the true class, per
sample, with no label dropout (there is no null class).

Evaluation (every ``eval_every`` steps; default once per epoch, and once more at the end): the
EMA weights' accuracy in each quarter of the noise levels, t in [0, T/4), [T/4, T/2), ... on
held-out images (fresh built-in images of another seed for the built-in set; otherwise up to
``eval_num`` training images, as the log says), with a fixed draw of t and noise so numbers
are comparable across steps. Columns ``acc_t0-249``, ..., ``acc`` go to metrics.csv, the log
and the model file (``meta["classifier"]["accuracy"]``). Accuracy falls with t: near T the
image is almost pure noise and the best possible accuracy is the class prior.

Per-sample training terms (metrics.csv columns): ``loss`` (the cross-entropy) and ``train_acc``
(1 where the arg-max class is right, on the noised training batch).

Previews: rows of the held-out images noised to the middle of each quarter (how much the
classifier has to go on).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F

from ...config import ModelConfig
from ...diffusion.schedule import Schedule, q_sample, schedule_name
from ...errors import ConfigError
from ...models import registry
from ..batches import Batch
from ..logging import MetricsCSV, get_logger
from ..rng import StepRNG
from .base import Snapshot, Task

BUCKETS = 4
EVAL_BATCH = 128
EVAL_SEED = 1_000_033  # fixed draw of t and noise for evaluation
BUILTIN_VAL_SEED = 2_000_003  # added to builtin_seed: held-out images the classifier never trains on
BUILTIN_VAL_PER_CLASS = 50
DEFAULT_NETWORK = "classifier-small"


def bucket_edges(num_steps: int, buckets: int = BUCKETS) -> List[int]:
    """Edges 0 = e_0 < e_1 < ... < e_n = T of ``buckets`` equal ranges of timesteps."""
    return [round(i * num_steps / buckets) for i in range(buckets + 1)]


def bucket_names(num_steps: int, buckets: int = BUCKETS) -> List[str]:
    e = bucket_edges(num_steps, buckets)
    return [f"acc_t{e[i]}-{e[i + 1] - 1}" for i in range(buckets)]


class ClassifierTask(Task):
    """Train a :class:`~difforge.models.classifier.NoisyClassifier` on noised images of the configured schedule."""

    name = "classifier"

    def check_data(self, data) -> None:
        c = self.config
        if c.model.network == ModelConfig.network:  # the diffusion default: this task's default is a classifier
            c.model.network = DEFAULT_NETWORK
        from ...models.classifier import PRESETS

        if c.model.network not in PRESETS:
            raise ConfigError(f"task classifier trains a noisy classifier: network must be one of {', '.join(PRESETS)}, got {c.model.network!r}")
        if data.num_classes < 2:
            raise ConfigError(f"a classifier needs labelled images of at least two classes (class sub-folders); {data.source} has {data.num_classes}")
        if c.latent.latent:
            raise ConfigError("a noisy classifier guides pixel-space models; latent=true does not apply")

    def build(self, data, device: torch.device) -> torch.nn.Module:
        c = self.config
        dc, mc, fc, tc = c.data, c.model, c.diffusion, c.train
        options = dict(mc.network_options)
        options.update(image_size=dc.image_size, in_channels=int(data.images.shape[1]), num_classes=data.num_classes)  # channels: auto decided by the images
        registry.check_image_size(mc.network, options, dc.image_size)
        net = registry.build(mc.network, **options).to(device)
        self.schedule = Schedule.from_settings(fc)
        self.class_names = list(data.class_names)
        if tc.eval_every == 0:  # evaluate once per epoch
            per_epoch = max(1, len(data.images) // (tc.batch_size * self.dist.world_size))
            tc.eval_every = max(1, round(per_epoch / tc.grad_accum))
        self.val_images, self.val_labels, self.val_source = self._validation_set(data)
        self._last_eval_step = -1
        self.meta = {
            "kind": "classifier",
            "network": {"name": mc.network, "config": net.config},
            "diffusion": {"noise_schedule": fc.noise_schedule, "diffusion_steps": fc.diffusion_steps, "noise_shift": fc.noise_shift},
            "data": {"image_size": dc.image_size, "channels": int(data.images.shape[1]), "class_names": self.class_names},
            "classifier": {"validation": self.val_source},
        }
        return net

    def _validation_set(self, data):
        """uint8 (N, C, H, W) held-out images, their labels, and where they come from."""
        from ...data.source import load_training_images

        dc, tc = self.config.data, self.config.train
        if dc.data is None:
            fresh = dataclasses.replace(dc, builtin_seed=dc.builtin_seed + BUILTIN_VAL_SEED,
                                        builtin_per_class=min(dc.builtin_per_class, BUILTIN_VAL_PER_CLASS))
            val = load_training_images(fresh, progress=False)
            return val.images, val.labels, f"built-in defect dataset, seed {fresh.builtin_seed} ({len(val.images)} held-out images)"
        g = torch.Generator().manual_seed(EVAL_SEED)
        idx = torch.randperm(len(data.images), generator=g)[: tc.eval_num]
        return data.images[idx], data.labels[idx], f"{len(idx)} of the training images (no held-out set for a folder)"

    def loss(self, net, batch: Batch, rng: StepRNG) -> Dict[str, torch.Tensor]:
        x = batch.x
        t = rng.randint(0, self.schedule.num_steps, device=x.device)
        noise = rng.randn(x.shape[1:], x.device)
        y = rng.local(batch.labels, x.device)
        x_t = q_sample(self.schedule, x, t, noise)
        logits = net(x_t, t).float()
        return {"loss": F.cross_entropy(logits, y, reduction="none"), "train_acc": (logits.detach().argmax(1) == y).float()}

    # -- evaluation and previews ----------------------------------------------------------------
    def _noised(self, images: torch.Tensor, bucket: int, device) -> tuple:
        """The held-out images noised at a fixed draw of t in ``bucket`` (the same at every evaluation)."""
        e = bucket_edges(self.schedule.num_steps)
        g = torch.Generator().manual_seed(EVAL_SEED + bucket)
        t = torch.randint(e[bucket], e[bucket + 1], (len(images),), generator=g)
        noise = torch.randn(images.shape, generator=g)
        x0 = images.float().div(127.5).sub(1.0)
        return q_sample(self.schedule, x0, t, noise).to(device), t.to(device)

    @torch.inference_mode()
    def accuracy_by_noise(self, net, device, autocast) -> Dict[str, float]:
        """{acc_t<lo>-<hi>: accuracy in each quarter of t, acc: their mean, val_loss: mean cross-entropy}."""
        net.eval()
        row, losses = {}, []
        for b, name in enumerate(bucket_names(self.schedule.num_steps)):
            x_t, t = self._noised(self.val_images, b, device)
            correct = 0
            for i in range(0, len(x_t), EVAL_BATCH):
                with autocast():
                    logits = net(x_t[i : i + EVAL_BATCH], t[i : i + EVAL_BATCH]).float()
                y = self.val_labels[i : i + EVAL_BATCH].to(device)
                correct += (logits.argmax(1) == y).sum().item()
                losses.append(F.cross_entropy(logits, y, reduction="sum").item())
            row[name] = round(correct / len(x_t), 4)
        row["acc"] = round(sum(row.values()) / len(row), 4)
        row["val_loss"] = round(sum(losses) / (len(self.val_images) * BUCKETS), 5)
        return row

    def evaluate(self, snapshot: Snapshot, step: int, data) -> Dict[str, float]:
        row = self.accuracy_by_noise(snapshot.net, snapshot.device, snapshot.autocast)
        self._last_eval_step = step
        self.meta["classifier"]["accuracy"] = dict(row, step=step)
        get_logger().info(f"accuracy by noise level at step {step}: " + ", ".join(f"{k[4:] or 'all'} {v:.1%}" for k, v in row.items() if k.startswith("acc")))
        return row

    def preview(self, snapshot: Snapshot, step: int, data) -> Optional[Path]:
        """Held-out images noised to the middle of each quarter of t (one row each). A preview at a
        step not just evaluated (the end of a run) also evaluates: log and metrics.csv."""
        from ...data.io import make_grid, save_image, to_uint8

        if step != self._last_eval_step:
            row = self.evaluate(snapshot, step, data)
            MetricsCSV(snapshot.run_dir / "metrics.csv").log({"step": step, **row})
        tc = self.config.train
        images = self.val_images[: tc.preview_num].float().div(127.5).sub(1.0)
        e = bucket_edges(self.schedule.num_steps)
        rows = []
        for b in range(BUCKETS):
            t = torch.full((len(images),), (e[b] + e[b + 1] - 1) // 2)
            noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(EVAL_SEED))
            rows.append(to_uint8(q_sample(self.schedule, images, t, noise)))
        grid = make_grid(torch.cat(rows).numpy(), nrow=len(images))
        return save_image(grid, snapshot.samples_dir / f"step_{step:07d}.{tc.image_format}")

    def describe(self) -> str:
        fc = self.config.diffusion
        return (f"noisy classifier of {len(self.class_names)} classes on x_t of the {schedule_name(fc)}, "
                f"T={fc.diffusion_steps}; accuracy by noise level on {self.val_source}, every {self.config.train.eval_every} steps")


__all__ = ["ClassifierTask", "bucket_edges", "bucket_names"]
