"""What one kind of model needs from the shared training loop: the ``Task`` seam.

The :class:`~difforge.train.trainer.Trainer` owns everything every model kind shares: data in
RAM, the batch plan (and so the data order, also under DDP), counter-based randomness, the
optimizer and LR schedule, precision (autocast), gradient accumulation and clipping, DDP, EMA,
checkpoints, resume, Ctrl-C, time budgets, metrics.csv and the log. A task owns what differs:
which network is built, what a micro-batch's per-sample loss terms are, what a preview shows and
what an evaluation measures. A diffusion model, a VAE and a noisy classifier are three tasks
over the same loop.

The contract (all methods are called on every rank unless said otherwise):

- ``check_data(data)``: raise a :class:`~difforge.errors.ConfigError` for data the task cannot use.
- ``build(data, device) -> nn.Module``: the network to train, on ``device``. Also sets
  ``self.meta``: the self-description written into every model file (``meta["kind"]`` names the
  task; ``network`` / ``data`` entries as the diffusion task writes them).
- ``inputs(data, idx, flip, device) -> Tensor``: the float inputs of dataset rows ``idx`` with
  the per-image horizontal-flip mask ``flip`` (default: uint8 pixels to [-1, 1]).
- ``loss(net, batch, rng) -> {name: Tensor (B,)}``: per-sample terms of one micro-batch
  (:class:`~difforge.train.batches.Batch`). ``"loss"`` is what is minimised (importance
  weights already applied); every other term is only logged. The trainer runs this under
  autocast, averages ``loss`` over the batch for backward and logs the mean of every term as a
  metrics.csv column. Random draws come from ``rng`` (:class:`~difforge.train.rng.StepRNG`):
  they cover the *global* batch and keep this rank's rows, so that results do not depend on the
  number of processes.
- ``state_tensors() / load_state_tensors(d)``: extra tensors a resumed run needs (e.g. the
  importance sampler's loss history); stored in the training-state file.
- ``preview(snapshot, step, data) -> Path or None`` (rank 0 only): a picture of progress, made
  from a :class:`Snapshot` (EMA weights + model description), never from the trainer.
- ``evaluate(snapshot, step, data) -> dict`` (rank 0 only; every ``eval_every`` steps): numbers
  for metrics.csv.
- ``describe() -> str``: one log line about the model.

Tasks are looked up by the config's ``train.task`` name in :data:`TASK_MODULES` (built-in
modules load on first use); :func:`register_task` adds one.
"""

from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Type, Union

import torch

from ... import config as config_module
from ...config import Config
from ...errors import ConfigError
from ...runtime import autocast_factory
from ..batches import Batch
from ..distributed import DistInfo
from ..rng import StepRNG

# task name -> Task subclass, or "module:Class" imported on first use
TASK_MODULES: Dict[str, Union[str, Type["Task"]]] = {
    "diffusion": "difforge.train.tasks.diffusion:DiffusionTask",
    "vae": "difforge.train.tasks.vae:VAETask",
    "classifier": "difforge.train.tasks.classifier:ClassifierTask",
    "inpaint": "difforge.train.tasks.inpaint:InpaintTask",
    "sr": "difforge.train.tasks.superres:SuperResTask",
    "sr-regression": "difforge.train.tasks.superres_regression:RegressionSRTask",
    "joint": "difforge.train.tasks.joint:JointMaskTask",
}


def register_task(name: str, task: Union[str, Type["Task"]]) -> None:
    """Make ``name`` a valid ``train.task``: ``task`` is a :class:`Task` subclass or ``"module:Class"``."""
    TASK_MODULES[name] = task
    if name not in config_module.TASKS:  # the config's check of train.task reads this tuple
        config_module.TASKS = (*config_module.TASKS, name)


def make_task(config: Config, dist: Optional[DistInfo] = None) -> "Task":
    """The task named by ``config.train.task``."""
    name = config.train.task
    if name not in TASK_MODULES:
        raise ConfigError(f"task={name!r} is not known; choose one of {', '.join(TASK_MODULES)}")
    cls = TASK_MODULES[name]
    if isinstance(cls, str):
        module, attr = cls.split(":")
        cls = getattr(importlib.import_module(module), attr)
    return cls(config, dist or DistInfo())


@dataclass
class Snapshot:
    """What a preview or an evaluation sees of a run: the EMA network (eval mode, no grad) with
    its model-file description, where it runs and where the run's files go."""

    net: torch.nn.Module
    meta: Dict[str, Any]
    device: torch.device
    precision: str = "fp32"
    run_dir: Path = field(default_factory=Path)

    def autocast(self):
        """The autocast context of the run's precision (a no-op for fp32)."""
        return autocast_factory(self.precision, self.device)()

    @property
    def samples_dir(self) -> Path:
        return self.run_dir / "samples"


class Task(abc.ABC):
    """Base class: pixel inputs, no extra state, no preview or evaluation; a task must say how to
    build its network and what its per-sample loss terms are."""

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
        return self.mirror(data.images[idx].to(device, non_blocking=True).float().div_(127.5).sub_(1.0), flip)

    def inputs_with_mask(self, data, masks: torch.Tensor, idx: torch.Tensor, flip: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Pixels in [-1, 1] with their bool ``masks`` rows (0 / 1) as one more channel, mirrored together."""
        x = data.images[idx].to(device).float().div_(127.5).sub_(1.0)
        return self.mirror(torch.cat([x, masks[idx].to(device).float()], dim=1), flip)

    def mirror(self, x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        """``x`` with the rows ``flip`` marks mirrored left-right when ``hflip`` is on (in place): one
        call for an image and whatever channels ride with it (a mask), so they stay aligned."""
        if self.config.data.hflip:
            f = flip.to(x.device)
            x[f] = x[f].flip(-1)
        return x

    @abc.abstractmethod
    def loss(self, net: torch.nn.Module, batch: Batch, rng: StepRNG) -> Dict[str, torch.Tensor]:
        """Per-sample terms (B,) of one micro-batch; ``"loss"`` is minimised, the rest is logged."""

    def state_tensors(self) -> Dict[str, torch.Tensor]:
        return {}

    def load_state_tensors(self, tensors: Dict[str, torch.Tensor]) -> None:
        pass

    def preview(self, snapshot: Snapshot, step: int, data) -> Optional[Path]:
        return None

    def evaluate(self, snapshot: Snapshot, step: int, data) -> Dict[str, float]:
        return {}

    def describe(self) -> str:
        return f"task {self.name}"


__all__ = ["Task", "Snapshot", "make_task", "register_task", "TASK_MODULES"]
