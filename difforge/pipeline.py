"""Pipeline: a model file in, images out. The one way every consumer makes images.

    pipe = Pipeline.from_checkpoint("runs/x/checkpoints/ema.safetensors")
    out = pipe.generate(num=8, class_label="scratch", sampler="ddim", steps=50, seed=0)
    out.images  # (8, H, W, C) uint8 tensor;  out.pil()  # list of PIL images

    pipe.interpolate(seeds=(3, 4), class_label="crack")             # slerp between two x_T
    pipe.interpolate(images=("a.png", "b.png"), t=500)               # DDPM-style, via x_t
    pipe.trajectory(num=4, class_label="scratch", frames=10).grid()  # x_t / x0 over the steps
"""

from __future__ import annotations

import inspect
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from .diffusion.denoiser import Denoiser
from .diffusion.interpolation import lerp, mix_lambdas, slerp, timesteps_from
from .diffusion.samplers import get_sampler
from .diffusion.samplers.common import randn_like
from .diffusion.sampling import make_generators, sample_images
from .diffusion.schedule import Schedule, q_sample
from .diffusion.timesteps import alpha_bars, default_spacing, sampling_timesteps
from .errors import CheckpointError, UserError
from .models import registry
from .runtime import autocast_factory, resolve_device, resolve_precision
from .train.checkpoint import load_model_file, load_weights_into

ClassLabel = Union[None, int, str]


@dataclass
class Generated:
    """Images as uint8 (N, H, W, C) and their class indices (or None for an unconditional model)."""

    images: torch.Tensor
    labels: Optional[torch.Tensor]
    class_names: List[str]

    def pil(self):
        from .data.io import images_to_pil

        return images_to_pil(self.images.numpy())


@dataclass
class Interpolation:
    """Frames between two ends: uint8 (K, H, W, C), frame k made with mixing weight ``lambdas[k]``.

    ``mode`` is ``"seeds"`` (frames[0] / frames[-1] are the two seeds' own samples) or
    ``"images"`` (``sources`` holds the two input images, uint8 (2, H, W, C), as the model sees
    them: resized and center-cropped). ``timesteps`` are those the sampler ran; ``class_index``
    the class it was conditioned on (None = unconditional / null class).
    """

    frames: torch.Tensor
    lambdas: List[float]
    mode: str
    sources: Optional[torch.Tensor] = None
    timesteps: List[float] = field(default_factory=list)
    class_index: Optional[int] = None

    def grid(self, padding: int = 2) -> np.ndarray:
        """One row, read left to right: [source A,] the K frames (lambda 0 -> 1)[, source B].

        The sources are the first and last *columns* (image mode only; in seed mode the first and
        last frames are the seeds' samples themselves).
        """
        from .data.io import make_grid

        arr = self.frames.numpy()
        if self.sources is not None:
            src = self.sources.numpy()
            arr = np.concatenate([src[:1], arr, src[1:]])
        return make_grid(arr, nrow=len(arr), padding=padding)


@dataclass
class Trajectory:
    """Snapshots of a batch being denoised: F chosen sampler steps of N images.

    ``xt`` / ``x0``: uint8 (F, N, H, W, C): the state x_t after step ``steps[f]`` and the
    denoiser's prediction of x0 at that step (made at timestep ``timesteps[f]``). ``steps`` are
    strictly increasing sampler step indices, the last being the final step, so ``xt[-1]`` is the
    finished sample, equal to ``final.images``.
    """

    xt: torch.Tensor
    x0: torch.Tensor
    steps: List[int]
    timesteps: List[float]
    final: Generated

    def grid(self, padding: int = 2) -> np.ndarray:
        """Rows: for each image its x_t row, then its predicted-x0 row (2N rows); columns: the F frames."""
        from .data.io import make_grid

        f, n = self.xt.shape[:2]
        rows = torch.stack([self.xt, self.x0], dim=0).permute(2, 0, 1, 3, 4, 5)  # (N, 2, F, H, W, C)
        return make_grid(rows.reshape(2 * n * f, *self.xt.shape[2:]).numpy(), nrow=f, padding=padding)

    def gif_frames(self, padding: int = 2) -> List[np.ndarray]:
        """One picture per frame: the N images' x_t on the top row, their predicted x0 below."""
        from .data.io import make_grid

        n = self.xt.shape[1]
        return [make_grid(torch.cat([self.xt[k], self.x0[k]]).numpy(), nrow=n, padding=padding) for k in range(len(self.steps))]


_CONTRACT_ARGS = {"denoiser", "x_T", "schedule", "timesteps", "y", "generator", "callback"}


def sampler_options(name: str) -> Dict[str, Any]:
    """The options sampler ``name`` accepts beyond the sampler contract, with their defaults."""
    params = inspect.signature(get_sampler(name)).parameters.values()
    return {p.name: p.default for p in params if p.kind == p.KEYWORD_ONLY and p.name not in _CONTRACT_ARGS}


def check_sampler_options(name: str, opts: Dict[str, Any]) -> None:
    """A UserError naming the sampler and the options it does take when ``opts`` has one it does not."""
    try:
        fn = get_sampler(name)
    except ValueError as e:
        raise UserError(str(e)) from None
    if any(p.kind == p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values()):
        return
    accepted = sampler_options(name)
    unknown = [k for k in opts if k not in accepted]
    if unknown:
        takes = ", ".join(f"{k} (default {v!r})" for k, v in accepted.items()) or "no options"
        given = ", ".join(f"{k} (--{k.replace('_', '-')})" for k in unknown)
        raise UserError(f"sampler {name} does not take {given}; it takes {takes}")


def trajectory_steps(schedule: Schedule, timesteps: Sequence[float], frames: int) -> List[int]:
    """Which of a sampler's steps to show: ``frames`` indices, coarse early and fine late.

    Frames are spaced evenly in the angle phi = arccos(sqrt(ab_t)) of x_t = cos(phi) x0 +
    sin(phi) eps, i.e. by how far x_t has turned from noise toward the image, so the picture
    emerges at an even pace. With the linear schedule most early steps are pure noise (phi
    barely moves) and get few frames; with the cosine schedule phi is linear in t. Each target
    angle takes the nearest step, pushed on where needed so the indices are strictly increasing;
    the first and the last step are always shown. ``frames`` >= the number of steps shows every step.
    """
    n = len(timesteps)
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if frames >= n:
        return list(range(n))
    if frames == 1:
        return [n - 1]
    phi = [math.acos(min(1.0, math.sqrt(a))) for a in alpha_bars(schedule, timesteps, check=False)]
    picks: List[int] = []
    for j in range(frames):
        target = phi[0] + (phi[-1] - phi[0]) * j / (frames - 1)
        nearest = min(range(n), key=lambda i: abs(phi[i] - target))
        lo = picks[-1] + 1 if picks else 0
        picks.append(min(max(nearest, lo), n - frames + j))
    return picks


GUIDANCE_ARGS = ("classifier", "classifier_scale", "uncond_model")


def _guidable(method: Callable) -> Callable:
    """Let ``method`` also take ``classifier=``, ``classifier_scale=`` and ``uncond_model=``: the
    call then runs on :meth:`Pipeline.guided`'s view (same images, guided denoiser)."""
    import functools

    default_sampler = inspect.signature(method).parameters["sampler"].default

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        extra = {k: kwargs.pop(k) for k in GUIDANCE_ARGS if k in kwargs}
        if extra.get("classifier") is None and extra.get("uncond_model") is None:
            return method(self, *args, **kwargs)
        return method(self.guided(**extra, sampler=kwargs.get("sampler", default_sampler)), *args, **kwargs)

    return call


class Pipeline:
    """A loaded, ready-to-sample model: network + schedule + the description from its file."""

    def __init__(self, net: torch.nn.Module, meta: Dict[str, Any], device: torch.device, precision: str = "fp32", source: str = "",
                 codec=None):
        self.net = net.eval().requires_grad_(False)
        self.codec = codec  # a latent model's VAE (difforge.latent.LatentCodec): samplers run on latents, images are decoded
        self.meta = meta
        self.device = device
        self.precision = precision
        self.source = source
        d = meta["diffusion"]
        self.schedule = Schedule.named(d["noise_schedule"], d["diffusion_steps"])
        self.target = d["target"]
        self.learn_sigma = bool(d.get("learn_sigma", False))
        data = meta["data"]
        self.image_size = int(data["image_size"])
        self.channels = int(data["channels"])
        self.class_names: List[str] = list(data.get("class_names") or [])

    # -- loading --------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path, device: str = "auto", precision: str = "auto", vae=None) -> "Pipeline":
        """Load a model file. A latent model finds its VAE by itself (see :func:`difforge.latent.load_codec`);
        ``vae`` gives the VAE file's new place when it moved."""
        tensors, meta = load_model_file(path)
        kind = meta.get("kind", "diffusion")
        if kind != "diffusion":
            raise CheckpointError(f"{path} is a {kind} model file, not a diffusion model; give the diffusion model's file (e.g. runs/NAME/checkpoints/ema.safetensors)")
        try:
            net_meta = meta["network"]
            net = registry.build(net_meta["name"], **net_meta["config"])
            meta["diffusion"], meta["data"]
        except KeyError as e:
            raise CheckpointError(f"{path} lacks the {e} entry of a difforge model description") from None
        load_weights_into(net, tensors, path)
        dev = resolve_device(device)
        prec = resolve_precision(precision, dev)
        if prec == "fp16":  # sampling in fp16 without loss scaling is risky; bf16/fp32 are safe
            prec = "fp32"
        codec = None
        if meta.get("latent"):
            from .latent import load_codec

            codec = load_codec(meta["latent"], path, override=vae, device=dev)
        elif vae is not None:
            raise UserError(f"{path} is a pixel-space model; --vae applies to latent models only")
        return cls(net.to(dev), meta, dev, prec, source=str(path), codec=codec)

    # -- latent models: the sampler's space vs pixels -------------------------------------------
    @property
    def sample_shape(self) -> tuple:
        """(C, H, W) of what the sampler draws: pixels, or a latent model's latents."""
        if self.codec is not None:
            return self.codec.latent_shape(self.image_size)
        return (self.channels, self.image_size, self.image_size)

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Sampler space -> float pixels in [-1, 1] (the VAE decodes a latent model's latents)."""
        return x.float().clamp(-1, 1) if self.codec is None else self.codec.decode(x)

    # -- description ----------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def resolve_class(self, label: ClassLabel) -> Optional[int]:
        """A class name or index -> index; None for unconditional models or 'no class'."""
        if label is None:
            return None
        if not self.class_names:
            raise UserError("this model is unconditional; leave out --class")
        if isinstance(label, int) or (isinstance(label, str) and label.lstrip("-").isdigit()):
            idx = int(label)
            if not 0 <= idx < self.num_classes:
                raise UserError(f"class index {idx} is out of range; the model has classes 0..{self.num_classes - 1}: {', '.join(self.class_names)}")
            return idx
        if label in self.class_names:
            return self.class_names.index(label)
        raise UserError(f"unknown class {label!r}; the model's classes are: {', '.join(self.class_names)}")

    def labels_for(self, num: int, class_label: ClassLabel) -> Optional[torch.Tensor]:
        """Labels of a request: one class, ``all`` (num per class, class-major) or random classes."""
        if not self.class_names:
            if class_label not in (None, "all"):
                self.resolve_class(class_label)
            return None
        if class_label == "all":
            return torch.arange(self.num_classes).repeat_interleave(num)
        if class_label is None:
            return torch.arange(num) % self.num_classes
        return torch.full((num,), self.resolve_class(class_label), dtype=torch.long)

    def denoiser(self, cfg: float = 3.0, clip_x0: bool = True, threshold: Optional[float] = None, cfg_rescale: float = 0.0) -> Denoiser:
        """The network as samplers see it; on a :meth:`guided` view, with that guidance around it
        (and then ``cfg`` is w of two-model guidance when it has an unconditional model)."""
        if threshold is not None and self.codec is not None:
            raise UserError("dynamic thresholding (--threshold) bounds pixel values; a latent model's latents are not bounded, leave it out")
        net_classes = len(self.meta["data"].get("class_names") or [])  # a guided view may label by its classifier's classes
        den = Denoiser(
            self.net,
            self.schedule,
            target=self.target,
            learn_sigma=self.learn_sigma,
            num_classes=net_classes,
            cfg_scale=cfg if net_classes else 1.0,
            cfg_rescale=cfg_rescale,
            clip_x0=clip_x0 and self.codec is None,  # latents are not bounded to [-1, 1]
            threshold=threshold,
            autocast=autocast_factory(self.precision, self.device),
        )
        guide = getattr(self, "_guide", None)
        return den if guide is None else guide.wrap(den, cfg)

    def guided(self, classifier=None, classifier_scale: float = 1.0, uncond_model=None, sampler: str = "ddim") -> "Pipeline":
        """A view of this pipeline whose denoiser is guided (see :mod:`difforge.pipeline_guidance`).

        ``classifier``: a noisy-classifier file (``difforge train-classifier``) or a loaded
        ``(net, meta)``, with ``classifier_scale`` s (Dhariwal & Nichol 2021; the ddpm sampler
        gets the mean shift of their Alg. 1, the others the eps shift of Alg. 2). On an
        unconditional model the view's classes are the classifier's. ``uncond_model``: a model file
        or Pipeline for two-model classifier-free guidance; the request's ``cfg`` is then w of
        eps = (1 + w) eps_c - w eps_u (built-in CFG's scale s = 1 + w). ``generate``,
        ``trajectory`` and ``interpolate`` take the same keywords and call this.
        """
        from .pipeline_guidance import make_guide

        guide, names = make_guide(self, classifier, classifier_scale, uncond_model, sampler)
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        view._guide, view.class_names = guide, names
        return view

    # -- generation -----------------------------------------------------------------------
    @_guidable
    def generate(
        self,
        num: int = 16,
        class_label: ClassLabel = None,
        *,
        sampler: str = "ddim",
        steps: Optional[int] = 50,
        spacing: Optional[str] = None,
        eta: Optional[float] = None,
        cfg: float = 3.0,
        cfg_rescale: float = 0.0,
        clip_x0: bool = True,
        threshold: Optional[float] = None,
        seed: int = 0,
        seeds: Optional[Sequence[int]] = None,
        batch_size: int = 16,
        progress: bool = False,
        callback: Optional[Callable] = None,
        **sampler_opts,
    ) -> Generated:
        """Make images. Image i uses seed ``seed + i`` (or ``seeds[i]``), whatever the batch size.

        ``class_label``: a name or index, ``"all"`` (``num`` images of every class) or None
        (classes in turn for a conditional model). ``cfg`` is the classifier-free guidance scale
        (1 = plain conditional). ``steps=None`` runs every training step. ``classifier``,
        ``classifier_scale``, ``uncond_model``: guidance from other files, see :meth:`guided`.
        """
        labels, seeds = self._request(num, class_label, seed, seeds)
        if eta is not None:
            sampler_opts["eta"] = eta
        self._check_sampler(sampler, sampler_opts)
        try:
            x = self._sample(labels, seeds, sampler, steps, spacing, cfg, cfg_rescale, clip_x0, threshold, batch_size, progress, callback, sampler_opts)
        except ValueError as e:  # a sampler / option that does not fit: the user's to fix
            raise UserError(str(e)) from None
        from .data.io import to_uint8

        return Generated(to_uint8(x), labels, self.class_names)

    def _check_sampler(self, sampler: str, opts: Dict[str, Any]) -> None:
        """Options that do not fit the sampler or this model: one clear line before any work."""
        check_sampler_options(sampler, opts)
        if opts.get("variance") == "learned" and not self.learn_sigma:
            raise UserError(
                f"variance 'learned' (--variance learned) needs a model trained with learn_sigma; "
                f"{self.source or 'this model'} predicts no variance: use fixed_small or fixed_large"
            )

    def _request(self, num: int, class_label: ClassLabel, seed: int, seeds: Optional[Sequence[int]]):
        """(labels or None, one seed per image) of a request for ``num`` images."""
        if num < 1:
            raise UserError(f"num must be >= 1, got {num}")
        labels = self.labels_for(num, class_label)
        total = len(labels) if labels is not None else num
        if seeds is None:
            seeds = [seed + i for i in range(total)]
        elif len(seeds) != total:
            raise UserError(f"got {len(seeds)} seeds for {total} images")
        return labels, list(seeds)

    def _timesteps(self, sampler: str, steps, spacing: Optional[str]) -> list:
        """The sampler's timesteps from T - 1, exactly as :func:`sample_images` builds them."""
        try:
            return sampling_timesteps(self.schedule.num_steps, steps or self.schedule.num_steps, spacing or default_spacing(sampler), schedule=self.schedule)
        except ValueError as e:
            raise UserError(str(e)) from None

    def _run(self, sampler: str, denoiser: Denoiser, x_T, timesteps, y, generators, callback, opts) -> torch.Tensor:
        """One batch through a sampler: float (B, C, H, W) in [-1, 1] on the CPU."""
        fn = get_sampler(sampler)
        with torch.inference_mode():
            try:
                x0 = fn(denoiser, x_T, self.schedule, timesteps, y=y, generator=generators, callback=callback, **opts)
            except ValueError as e:  # a sampler / option that does not fit: the user's to fix
                raise UserError(str(e)) from None
        return self.to_pixels(x0).cpu()

    def _noise(self, seeds: Sequence[int]):
        """x_T and the per-image generators (advanced past x_T) for ``seeds``, as in :func:`sample_images`."""
        gens = make_generators(seeds, self.device)
        x = randn_like(torch.empty((len(seeds), *self.sample_shape), device=self.device), gens)
        return x, gens

    def _sample(self, labels, seeds, sampler, steps, spacing, cfg, cfg_rescale, clip_x0, threshold, batch_size, progress, callback, sampler_opts):
        x = sample_images(
            self.denoiser(cfg, clip_x0, threshold, cfg_rescale),
            shape=self.sample_shape,
            seeds=seeds,
            labels=labels,
            sampler=sampler,
            steps=steps,
            spacing=spacing,
            batch_size=batch_size,
            device=self.device,
            progress=progress,
            callback=callback,
            clamp=self.codec is None,
            **sampler_opts,
        )
        return x if self.codec is None else self.to_pixels(x)

    # -- denoising-progress pictures ------------------------------------------------------
    @_guidable
    def trajectory(
        self,
        num: int = 4,
        class_label: ClassLabel = None,
        *,
        frames: int = 10,
        sampler: str = "ddim",
        steps: Optional[int] = 50,
        spacing: Optional[str] = None,
        eta: Optional[float] = None,
        cfg: float = 3.0,
        cfg_rescale: float = 0.0,
        clip_x0: bool = True,
        threshold: Optional[float] = None,
        seed: int = 0,
        seeds: Optional[Sequence[int]] = None,
        batch_size: int = 16,
        progress: bool = False,
        **sampler_opts,
    ) -> Trajectory:
        """Generate like :meth:`generate` (same images for the same arguments) and keep snapshots.

        The sampler's ``callback(i, x_t, x0_pred)`` records ``frames`` of its steps, chosen by
        :func:`trajectory_steps` (coarse early, fine late).
        """
        labels, seeds = self._request(num, class_label, seed, seeds)
        if eta is not None:
            sampler_opts["eta"] = eta
        self._check_sampler(sampler, sampler_opts)
        timesteps = self._timesteps(sampler, steps, spacing)
        picks = trajectory_steps(self.schedule, timesteps, frames)
        wanted = set(picks)
        den = self.denoiser(cfg, clip_x0, threshold, cfg_rescale)
        from tqdm import tqdm

        from .data.io import to_uint8

        bar = tqdm(total=len(seeds) * len(timesteps), disable=not progress, desc=f"trajectory {sampler}", unit="step", dynamic_ncols=True)
        xts, x0s, finals = [], [], []
        for start in range(0, len(seeds), batch_size):
            batch = seeds[start : start + batch_size]
            x, gens = self._noise(batch)
            y = None if labels is None else labels[start : start + len(batch)].to(self.device)
            kept: Dict[int, tuple] = {}

            def record(i, x_t, x0, _kept=kept, _b=len(batch)):
                bar.update(_b)
                if i in wanted:
                    _kept[i] = (to_uint8(self.to_pixels(x_t)), to_uint8(self.to_pixels(x0)))

            finals.append(self._run(sampler, den, x, timesteps, y, gens, record, sampler_opts))
            xts.append(torch.stack([kept[i][0] for i in picks]))
            x0s.append(torch.stack([kept[i][1] for i in picks]))
        bar.close()
        final = Generated(to_uint8(torch.cat(finals)), labels, self.class_names)
        return Trajectory(torch.cat(xts, dim=1), torch.cat(x0s, dim=1), picks, [float(timesteps[i]) for i in picks], final)

    # -- interpolation --------------------------------------------------------------------
    @_guidable
    def interpolate(
        self,
        images: Optional[Sequence[Any]] = None,
        seeds: Sequence[int] = (0, 1),
        class_label: ClassLabel = None,
        *,
        t: Optional[int] = None,
        num_mix: int = 9,
        sampler: str = "ddim",
        steps: Optional[int] = 50,
        spacing: Optional[str] = None,
        eta: Optional[float] = None,
        cfg: float = 3.0,
        cfg_rescale: float = 0.0,
        clip_x0: bool = True,
        threshold: Optional[float] = None,
        seed: int = 0,
        batch_size: int = 16,
        progress: bool = False,
        **sampler_opts,
    ) -> Interpolation:
        """``num_mix`` images walking from one end to the other (lambda = 0, ..., 1).

        - ``images`` None: between the samples of ``seeds[0]`` and ``seeds[1]``: x_T =
          slerp(noise(seed A), noise(seed B), lambda), then the sampler from T - 1. Frame 0 is
          exactly ``generate(seeds=[A])`` (and the last frame ``generate(seeds=[B])`` for a
          deterministic sampler: stochastic samplers draw every frame's noise from seed A, so the
          frames vary smoothly).
        - ``images`` = two paths (or uint8 (H, W, C) arrays): both are loaded as for training,
          diffused to step ``t`` (default T/2) with one shared noise (seed ``seed``), mixed
          linearly on x_t, then denoised by the sampler over ``steps`` timesteps from t to 0.
          Small t stays close to the sources; large t gives more novel, less faithful frames.

        ``class_label``: one class to condition on; None on a conditional model uses the
        unconditional (null-class) model.
        """
        from .data.io import to_uint8

        if class_label == "all":
            raise UserError("an interpolation is conditioned on one class; give a class name or index, or none")
        y_index = self.resolve_class(class_label)
        if isinstance(num_mix, bool) or not isinstance(num_mix, numbers.Integral) or num_mix < 2:
            raise UserError(f"num_mix (--num-mix) must be an integer >= 2 (the two ends and the frames between), got {num_mix!r}")
        if eta is not None:
            sampler_opts["eta"] = eta
        self._check_sampler(sampler, sampler_opts)
        num_mix = int(num_mix)
        lambdas = mix_lambdas(num_mix)
        last = self.schedule.num_steps - 1
        sources = None
        if images is None:
            if t is not None:
                raise UserError("t (--t) applies to image interpolation (--images); seed interpolation starts from pure noise at step T-1")
            if len(seeds) != 2:
                raise UserError(f"give exactly two seeds to interpolate between, got {len(seeds)}")
            timesteps = self._timesteps(sampler, steps, spacing)
            (a, b), _ = self._noise([int(s) for s in seeds])
            x_mix = torch.stack([slerp(a, b, lam) for lam in lambdas])
            gen_seed = int(seeds[0])
        else:
            if len(images) != 2:
                raise UserError(f"give exactly two images to interpolate between, got {len(images)}")
            if t is None:
                t = self.schedule.num_steps // 2
            if isinstance(t, bool) or not isinstance(t, numbers.Integral) or not 0 <= t <= last:
                raise UserError(f"t (--t) must be an integer timestep in 0..{last} (this model has {last + 1} diffusion steps), got {t}")
            if isinstance(steps, str):
                raise UserError(f"a respacing string ({steps!r}) cannot start at step t; give a number of steps")
            try:
                timesteps = timesteps_from(self.schedule, int(t), steps, spacing or default_spacing(sampler))
            except ValueError as e:
                raise UserError(str(e)) from None
            src = np.stack([self._load_source(im) for im in images])
            sources = torch.from_numpy(src)
            x0 = sources.permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(self.device)
            if self.codec is not None:  # interpolate the images' latents (posterior means, scaled)
                x0 = self.codec.encode(x0)
            noise = randn_like(x0[:1], make_generators([seed], self.device)[0]).expand_as(x0)
            x_t = q_sample(self.schedule, x0, torch.full((2,), t, dtype=torch.long, device=self.device), noise)
            x_mix = torch.stack([lerp(x_t[0], x_t[1], lam) for lam in lambdas])
            gen_seed = seed
        y_all = None if y_index is None else torch.full((num_mix,), y_index, dtype=torch.long, device=self.device)
        den = self.denoiser(cfg, clip_x0, threshold, cfg_rescale)
        from tqdm import tqdm

        bar = tqdm(total=num_mix * len(timesteps), disable=not progress, desc=f"interpolate {sampler}", unit="step", dynamic_ncols=True)
        out = []
        for start in range(0, num_mix, batch_size):
            x = x_mix[start : start + batch_size]
            _, gens = self._noise([gen_seed] * len(x))  # every frame: the same sampler noise
            y = None if y_all is None else y_all[start : start + len(x)]
            out.append(self._run(sampler, den, x, timesteps, y, gens, lambda i, *_a, _b=len(x): bar.update(_b), sampler_opts))
        bar.close()
        mode = "seeds" if images is None else "images"
        return Interpolation(to_uint8(torch.cat(out)), lambdas, mode, sources, [float(v) for v in timesteps], y_index)

    def _load_source(self, image) -> np.ndarray:
        """A path (resized / center-cropped like training data) or a uint8 (H, W, C) array."""
        if isinstance(image, np.ndarray) or isinstance(image, torch.Tensor):
            arr = np.asarray(image)
            want = (self.image_size, self.image_size, self.channels)
            if arr.dtype != np.uint8 or arr.shape != want:
                raise UserError(f"an image array must be uint8 {want} for this model, got {arr.dtype} {arr.shape}")
            return arr
        from .data.folder import load_image

        path = Path(image)
        if not path.is_file():
            raise UserError(f"image {path} does not exist; check the path")
        try:
            return load_image(path, self.image_size, self.channels)
        except Exception as e:  # Pillow raises many kinds for a bad file
            raise UserError(f"cannot read image {path}: {e}") from None

    def describe(self) -> Dict[str, Any]:
        n = sum(p.numel() for p in self.net.parameters())
        return {
            "file": self.source,
            "network": self.meta["network"]["name"],
            "parameters": n,
            "image_size": self.image_size,
            "channels": self.channels,
            "classes": self.class_names,
            "diffusion": self.meta["diffusion"],
            "network_config": self.meta["network"]["config"],
            "trained": self.meta.get("train", {}),
            "weights": self.meta.get("weights", "?"),
            **({"latent": dict(self.meta["latent"], vae_file=str(self.codec.path))} if self.codec is not None else {}),
        }


def save_generated(out: Generated, out_dir, fmt: str = "png", grid: bool = False, npz: bool = False, prefix: str = "sample") -> Dict[str, Any]:
    """Write images (and optionally a grid and an ``.npz``) to ``out_dir``; return what was written."""
    from .data.io import make_grid, save_image, save_images, save_npz

    out_dir = Path(out_dir)
    arr = out.images.numpy()
    labels = out.labels.numpy() if out.labels is not None else None
    written: Dict[str, Any] = {"images": save_images(arr, out_dir, prefix=prefix, fmt=fmt, labels=labels, class_names=out.class_names or None)}
    if grid:
        if labels is not None and out.class_names:
            written["grids"] = []
            for k, name in enumerate(out.class_names):
                sel = arr[labels == k]
                if len(sel):
                    written["grids"].append(save_image(make_grid(sel), out_dir / f"grid_{name}.{fmt}"))
        else:
            written["grids"] = [save_image(make_grid(arr), out_dir / f"grid.{fmt}")]
    if npz:
        written["npz"] = save_npz(out_dir / f"{prefix}s_{len(arr)}x{arr.shape[1]}x{arr.shape[2]}x{arr.shape[3]}.npz", arr, labels)
    return written


def save_interpolation(result: Interpolation, out_dir, fmt: str = "png", gif: bool = False, duration_ms: int = 150) -> Dict[str, Any]:
    """Write ``frame_00000.png`` ... (lambda 0 -> 1), ``interpolation.png`` (the one-row grid of
    :meth:`Interpolation.grid`) and, with ``gif``, ``interpolation.gif`` (frames forth and back)."""
    from .data.io import save_gif, save_image, save_images

    out_dir = Path(out_dir)
    arr = result.frames.numpy()
    written: Dict[str, Any] = {"images": save_images(arr, out_dir, prefix="frame", fmt=fmt)}
    written["grid"] = save_image(result.grid(), out_dir / f"interpolation.{fmt}")
    if gif:
        loop = list(arr) + list(arr[-2:0:-1])
        written["gif"] = save_gif(loop, out_dir / "interpolation.gif", duration_ms=duration_ms)
    return written


def save_trajectory(result: Trajectory, out_dir, fmt: str = "png", gif: bool = False, duration_ms: int = 300) -> Dict[str, Any]:
    """Write ``trajectory.png`` (:meth:`Trajectory.grid`) and, with ``gif``, ``trajectory.gif``
    (per frame: x_t on the top row, predicted x0 below; the last frame held longer)."""
    from .data.io import save_gif, save_image

    out_dir = Path(out_dir)
    written: Dict[str, Any] = {"grid": save_image(result.grid(), out_dir / f"trajectory.{fmt}")}
    if gif:
        frames = result.gif_frames()
        written["gif"] = save_gif(frames + [frames[-1]] * 3, out_dir / "trajectory.gif", duration_ms=duration_ms)
    return written
