"""An exact denoiser for data drawn from a Gaussian mixture, to test samplers without a network.

With x_t = a x_0 + s eps (a = sqrt(ab_t), s = sqrt(1 - ab_t)) and x_0 ~ sum_k w_k N(mu_k, S_k):

    p(x_t)          = sum_k w_k N(a mu_k, C_k),   C_k = a^2 S_k + s^2 I
    E[eps | x_t]    = -s grad log p(x_t) = sum_k r_k s C_k^-1 (x_t - a mu_k)
    E[x_0 | x_t]    = sum_k r_k (mu_k + a S_k C_k^-1 (x_t - a mu_k))     (Gaussian conditioning)

with r_k the posterior responsibility of component k. Both are computed directly (no division by
a small a or s), in float64, so the denoiser is the exact minimiser of the training loss and the
samplers' only error is their own discretisation.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from difforge.diffusion.denoiser import Prediction, alpha_bar_at
from difforge.diffusion.schedule import Schedule


class GaussianMixture:
    """Exact ``denoiser(x_t, t, y) -> Prediction`` for a Gaussian-mixture data distribution.

    x may have any shape (B, ...) whose trailing dims hold D = ``dim`` numbers; t may be fractional.
    """

    def __init__(self, schedule: Schedule, means, covs, weights):
        self.schedule = schedule
        self.means = torch.as_tensor(means, dtype=torch.float64)  # (K, D)
        self.covs = torch.as_tensor(covs, dtype=torch.float64)  # (K, D, D)
        w = torch.as_tensor(weights, dtype=torch.float64)
        self.weights = w / w.sum()
        evals, vecs = torch.linalg.eigh(self.covs)  # S_k = U_k diag(l_k) U_k^T
        k, d = self.means.shape
        self._u = vecs.permute(1, 0, 2).reshape(d, k * d)  # x @ _u = [U_1^T x, ..., U_K^T x]
        self._lam = evals.reshape(1, k * d)
        self._mu_u = (self.means[:, None, :] @ vecs).reshape(1, k * d)
        self._mu_rep = self.means.repeat_interleave(d, dim=0) / d  # r @ _mu_rep = sum_k r_k mu_k
        self._group = torch.kron(torch.eye(k, dtype=torch.float64), torch.ones(d, 1, dtype=torch.float64))  # (K*D, K)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    # -- the denoiser ------------------------------------------------------------------------
    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, y=None) -> Prediction:
        t = torch.as_tensor(t)
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        t = t.cpu()
        ab = alpha_bar_at(self.schedule, t[:1] if bool((t == t[0]).all()) else t).to(torch.float64)
        eps, x0 = self.predict(x_t.reshape(x_t.shape[0], -1).to(torch.float64).cpu(), ab)
        shape = lambda v: v.reshape(x_t.shape).to(dtype=x_t.dtype, device=x_t.device)  # noqa: E731
        return Prediction(eps=shape(eps), x0=shape(x0), var_frac=None)

    def predict(self, x: torch.Tensor, ab: torch.Tensor):
        """(E[eps | x_t], E[x_0 | x_t]) for x of shape (B, D) and alpha_bar of shape (B,).

        Per component k, in the eigenbasis U_k of S_k: C_k = U_k diag(a^2 l_k + s^2) U_k^T.
        The K components sit side by side in (B, K*D) matrices and every contraction is a
        matrix product: on a CPU that is several times faster than reductions over tiny dims.
        """
        if x.shape[1] != self.dim:
            raise ValueError(f"the mixture is {self.dim}-D but x has {x.shape[1]} numbers per sample")
        if ab.numel() > 1 and bool((ab == ab[0]).all()):
            ab = ab[:1]  # one timestep for the whole batch (the usual case)
        a, s2 = ab.sqrt()[:, None], (1.0 - ab)[:, None]
        d = a**2 * self._lam + s2  # eigenvalues of C_k, (B or 1, K*D)
        z = x @ self._u - a * self._mu_u  # U_k^T (x - a mu_k)
        w = z / d  # U_k^T C_k^-1 (x - a mu_k)
        logp = self.weights.log() - 0.5 * ((z * w) @ self._group) - 0.5 * (d.log() @ self._group)
        e = torch.exp(logp - logp.amax(1, keepdim=True))
        r = (e / (e @ self._group.new_ones(e.shape[1], 1))) @ self._group.T  # responsibilities, (B, K*D)
        eps = s2.sqrt() * ((r * w) @ self._u.T)
        x0 = r @ self._mu_rep + a * ((r * w * self._lam) @ self._u.T)
        return eps, x0

    # -- the exact noisy classifier (for guidance) --------------------------------------------
    def classifier(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """Logits of the exact posterior p(k | x_t): log w_k + log N(x_t; a mu_k, C_k) (+ a constant).

        log_softmax of them is log p(y=k | x_t), the noisy classifier that guidance uses; the
        terms are differentiable (autograd gives grad_x log p(y | x_t)). float64 in and out.
        """
        t = torch.as_tensor(t)
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        ab = alpha_bar_at(self.schedule, t.cpu()).to(torch.float64)
        x = x_t.reshape(x_t.shape[0], -1).to(torch.float64).cpu()
        a, s2 = ab.sqrt()[:, None], (1.0 - ab)[:, None]
        d = a**2 * self._lam + s2
        z = x @ self._u - a * self._mu_u
        logits = self.weights.log() - 0.5 * ((z * z / d) @ self._group) - 0.5 * (d.log() @ self._group)
        return logits.to(x_t.device)

    def component(self, k: int) -> "GaussianMixture":
        """The exact denoiser of component k alone: the data given class y = k."""
        return GaussianMixture(self.schedule, self.means[k : k + 1], self.covs[k : k + 1], [1.0])

    def x0_at_sigma(self, x_ve: np.ndarray, sigma: float) -> np.ndarray:
        """The ideal denoiser D(x, sigma) of the variance-exploding view x = x_t / a (for ODE references)."""
        ab = 1.0 / (1.0 + sigma**2)
        x = torch.as_tensor(x_ve, dtype=torch.float64) * math.sqrt(ab)
        return self.predict(x, torch.full((x.shape[0],), ab, dtype=torch.float64))[1].numpy()

    # -- the data ------------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator = None) -> torch.Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        chol = torch.linalg.cholesky(self.covs)
        return self.means[k] + torch.einsum("nij,nj->ni", chol[k], z)

    def moments(self):
        """Mean and covariance of the mixture."""
        m = (self.weights[:, None] * self.means).sum(0)
        second = (self.weights[:, None, None] * (self.covs + self.means[:, :, None] * self.means[:, None, :])).sum(0)
        return m, second - torch.outer(m, m)

    def mode_fractions(self, x: torch.Tensor) -> torch.Tensor:
        """Fraction of samples whose most likely component (under the data mixture) is k."""
        x = x.reshape(x.shape[0], -1).to(torch.float64)
        logp = torch.stack(
            [torch.distributions.MultivariateNormal(self.means[k], self.covs[k]).log_prob(x) + self.weights[k].log()
             for k in range(len(self.weights))], 1)
        return torch.bincount(logp.argmax(1), minlength=len(self.weights)).to(torch.float64) / x.shape[0]

    def distance(self, x: torch.Tensor) -> dict:
        """How far samples are from the data: Frechet distance of moment-matched Gaussians and mode error."""
        x = x.reshape(x.shape[0], -1).to(torch.float64)
        m, c = self.moments()
        fd = frechet_distance(x.mean(0), torch.cov(x.T), m, c)
        mode_err = (self.mode_fractions(x) - self.mode_fractions_truth()).abs().max().item()
        return {"frechet": fd, "mode_err": mode_err}

    def mode_fractions_truth(self) -> torch.Tensor:
        """Expected ``mode_fractions`` of true data (the weights, less the overlap), by a fixed large draw."""
        if not hasattr(self, "_truth_fracs"):
            self._truth_fracs = self.mode_fractions(self.sample(400_000, torch.Generator().manual_seed(1234)))
        return self._truth_fracs


class ClassConditional:
    """Exact class-conditional denoiser of a mixture: sample i is denoised by component y_i alone.

    With y=None it is the whole mixture's (unconditional) denoiser, like a null class.
    """

    def __init__(self, mixture: GaussianMixture):
        self.mixture = mixture
        self.schedule = mixture.schedule
        self.parts = [mixture.component(k) for k in range(len(mixture.weights))]

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, y=None) -> Prediction:
        if y is None:
            return self.mixture(x_t, t)
        t = torch.as_tensor(t)
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        eps, x0 = torch.empty_like(x_t), torch.empty_like(x_t)
        for k, part in enumerate(self.parts):
            sel = y == k
            if bool(sel.any()):
                p = part(x_t[sel], t[sel])
                eps[sel], x0[sel] = p.eps, p.x0
        return Prediction(eps=eps, x0=x0)


def overlapping_pair(schedule: Schedule) -> GaussianMixture:
    """Two overlapping isotropic 2-D components: a class's share of samples can grow over a range of guidance."""
    return GaussianMixture(schedule, [[-0.5, 0.0], [0.5, 0.0]], [[[0.25, 0.0], [0.0, 0.25]]] * 2, [0.7, 0.3])


def frechet_distance(m1, c1, m2, c2) -> float:
    """|m1 - m2|^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2), the W2 distance of two Gaussians."""
    from scipy.linalg import sqrtm

    c1, c2 = np.asarray(c1, dtype=np.float64), np.asarray(c2, dtype=np.float64)
    r1 = np.real(sqrtm(c1))
    cross = np.real(sqrtm(r1 @ c2 @ r1))
    diff = np.asarray(m1, dtype=np.float64) - np.asarray(m2, dtype=np.float64)
    return float(diff @ diff + np.trace(c1 + c2 - 2.0 * cross))


def three_blobs(schedule: Schedule) -> GaussianMixture:
    """The test problem: three well-separated, correlated 2-D components of unequal weight."""
    means = [[-1.2, -0.4], [0.9, 0.9], [0.8, -1.1]]
    covs = [
        [[0.09, 0.03], [0.03, 0.06]],
        [[0.05, -0.02], [-0.02, 0.08]],
        [[0.12, 0.0], [0.0, 0.03]],
    ]
    return GaussianMixture(schedule, means, covs, [0.5, 0.3, 0.2])
