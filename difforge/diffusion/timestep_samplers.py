"""Which timesteps a training batch sees, with importance weights that keep the loss unbiased.

A timestep sampler draws t ~ p_t and returns w_t = 1 / (T p_t), so that the weighted loss
mean(w_t L_t) estimates the uniform average (1/T) sum_t L_t whatever p is: E_p[w L] = sum_t L_t / T.

- ``uniform``: p_t = 1 / T, w = 1.
- ``loss-second-moment`` (Nichol & Dhariwal 2021, section 3.3): p_t proportional to
  sqrt(E[L_t^2]) over the last 10 losses seen at t, mixed with 1e-3 of the uniform distribution;
  uniform until every t has 10 losses. Sampling where the loss is large and noisy lowers the
  gradient variance of L_vlb by orders of magnitude.

State (the loss history) is a dict of tensors (``state_dict`` / ``load_state_dict``) so that a
resumed run continues exactly. Under DDP every rank must call :meth:`update` with the *gathered*
timesteps and losses of all ranks, in the same order, so that all ranks hold the same state.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch

TIMESTEP_SAMPLERS = ("uniform", "loss-second-moment")


class UniformTimesteps:
    """t ~ U{0, ..., T-1} with unit importance weights."""

    name = "uniform"

    def __init__(self, num_steps: int):
        self.num_steps = num_steps

    def probabilities(self) -> torch.Tensor:
        return torch.full((self.num_steps,), 1.0 / self.num_steps, dtype=torch.float64)

    def sample(self, batch: int, generator: Optional[torch.Generator] = None, device="cpu"):
        t = torch.randint(0, self.num_steps, (batch,), generator=generator)
        return t.to(device), torch.ones(batch, device=device)

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Uniform sampling ignores the losses; loss-aware samplers record them."""

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        """Nothing to restore (a run that switched from a loss-aware sampler drops its history)."""


class LossSecondMomentTimesteps(UniformTimesteps):
    """Importance sampling with p_t proportional to the RMS of the recent losses at t.

    Args:
        num_steps: T.
        history: losses kept per timestep (the warm-up needs this many at every t).
        uniform_prob: share of the uniform distribution mixed in, so no p_t is ever 0.
    """

    name = "loss-second-moment"

    def __init__(self, num_steps: int, history: int = 10, uniform_prob: float = 1e-3):
        super().__init__(num_steps)
        if history < 1 or not 0.0 < uniform_prob <= 1.0:
            raise ValueError(f"need history >= 1 and uniform_prob in (0, 1], got {history}, {uniform_prob}")
        self.history = history
        self.uniform_prob = uniform_prob
        self.losses = torch.zeros(num_steps, history, dtype=torch.float64)  # oldest first per row
        self.counts = torch.zeros(num_steps, dtype=torch.long)

    def warmed_up(self) -> bool:
        return bool((self.counts == self.history).all())

    def probabilities(self) -> torch.Tensor:
        if not self.warmed_up():
            return super().probabilities()
        rms = self.losses.pow(2).mean(dim=1).sqrt()
        total = rms.sum()
        if not torch.isfinite(total) or total <= 0:  # all losses zero (or broken): stay uniform
            return super().probabilities()
        return (1.0 - self.uniform_prob) * rms / total + self.uniform_prob / self.num_steps

    def sample(self, batch: int, generator: Optional[torch.Generator] = None, device="cpu"):
        if not self.warmed_up():
            return super().sample(batch, generator, device)
        p = self.probabilities()
        t = torch.multinomial(p, batch, replacement=True, generator=generator)
        weights = (1.0 / (self.num_steps * p[t])).float()
        return t.to(device), weights.to(device)

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Record per-sample ``losses`` (unweighted) at timesteps ``t``, in order.

        Under DDP pass the timesteps and losses gathered from every rank (same order everywhere).
        """
        hist, counts = self.losses.numpy(), self.counts.numpy()
        for ti, li in zip(t.detach().cpu().tolist(), losses.detach().double().cpu().tolist()):
            n = counts[ti]
            if n == self.history:
                hist[ti, :-1] = hist[ti, 1:]
                hist[ti, -1] = li
            else:
                hist[ti, n] = li
                counts[ti] = n + 1

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return {"losses": self.losses.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        if not state:
            return  # a run that used another sampler so far: start the warm-up now
        losses, counts = state["losses"], state["counts"]
        if tuple(losses.shape) != tuple(self.losses.shape) or tuple(counts.shape) != tuple(self.counts.shape):
            raise ValueError(
                f"timestep-sampler state has shape {tuple(losses.shape)}, expected {tuple(self.losses.shape)} "
                "(diffusion_steps or the history length changed since the checkpoint)"
            )
        self.losses.copy_(losses.to(torch.float64))
        self.counts.copy_(counts.to(torch.long))


def make_timestep_sampler(name: str, num_steps: int) -> UniformTimesteps:
    """The timestep sampler called ``name`` (``uniform`` or ``loss-second-moment``)."""
    if name == "uniform":
        return UniformTimesteps(num_steps)
    if name == "loss-second-moment":
        return LossSecondMomentTimesteps(num_steps)
    raise ValueError(f"unknown schedule sampler {name!r}; choose one of {', '.join(TIMESTEP_SAMPLERS)}")


__all__ = ["LossSecondMomentTimesteps", "TIMESTEP_SAMPLERS", "UniformTimesteps", "make_timestep_sampler"]
