"""Pipeline: a model file in, images out. The one way every consumer makes images.

    pipe = Pipeline.from_checkpoint("runs/x/checkpoints/ema.safetensors")
    out = pipe.generate(num=8, class_label="scratch", steps=25, seed=0)  # SampleConfig defaults otherwise
    out.images  # (8, H, W, C) uint8 tensor;  out.pil()  # list of PIL images

    pipe.interpolate(seeds=(3, 4), class_label="crack")             # slerp between two x_T
    pipe.interpolate(images=("a.png", "b.png"), t=500)               # DDPM-style, via x_t
    pipe.trajectory(num=4, class_label="scratch", frames=10).grid()  # x_t / x0 over the steps

A Pipeline is a loaded model (network, schedule, description, a latent model's VAE codec) plus
:meth:`Pipeline.denoiser` and one batch core, :meth:`Pipeline.sample_batches`: every mode
(``generate``, ``trajectory``, ``interpolate``, the trainer's previews) is a thin function over
that core. Guidance from other files is a new Pipeline from :meth:`Pipeline.with_guidance`.
Sampling settings come in a :class:`~difforge.pipeline.config.SampleConfig` (or as keywords
that change its fields).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from ..diffusion.denoiser import Denoiser
from ..diffusion.guidance import guidance_mode
from ..diffusion.samplers import get_sampler
from ..diffusion.samplers.common import make_generators, randn_like
from ..diffusion.superres import refuse_plain_sampling
from ..diffusion.schedule import Schedule
from ..diffusion.timesteps import default_spacing, sampling_timesteps
from ..errors import CheckpointError, UserError
from ..models import registry
from ..models.layers import sampling_memory_format
from ..modelfile import build_network, check_meta, load_model_file
from ..runtime import autocast_factory, resolve_device, resolve_precision
from .classes import ClassLabel, labels_for, resolve_class
from .config import SampleConfig, check_sampler_options, default_cfg, default_cfg_interval
from .results import Generated

GUIDANCE_ARGS = ("classifier", "classifier_scale", "uncond_model", "guide_model")


class Pipeline:
    """A loaded, ready-to-sample model: network + schedule + the description from its file.

    ``codec``: a latent model's VAE (:class:`difforge.codec.LatentCodec`): samplers run on
    latents, images are decoded. ``guide``: guidance from other files (see :meth:`with_guidance`).
    """

    text = None  # a text model's tokenizer or CLIP (pipeline/text.py), loaded on first use
    prompts = None  # a prompt view's table of (class, prompt) rows (:meth:`with_prompts`)
    linked_upscaler = None  # a cascade base's upsampler (meta["cascade"]), loaded on first use (pipeline/upscale.py)

    def __init__(self, net: torch.nn.Module, meta: Dict[str, Any], device: torch.device, precision: str = "fp32", source: str = "",
                 codec=None, guide=None, class_names: Optional[List[str]] = None):
        self.net = net.eval().requires_grad_(False)
        self.codec = codec
        self.guide = guide
        self.meta = meta
        self.device = device
        self.precision = precision
        self.source = source
        d = meta["diffusion"]
        self.schedule = Schedule.from_settings(d)
        self.target = d["target"]
        self.learn_sigma = bool(d.get("learn_sigma", False))
        data = meta["data"]
        self.image_size = int(data["image_size"])
        self.channels = int(data["channels"])
        # a cascade's half-size model (train/cascade.py): its images come out x scale by the upsampler its file names
        self.output_size = int((meta.get("cascade") or {}).get("image_size") or self.image_size)
        self.joint_mask = bool(data.get("joint_mask"))  # one more generated channel: the defect mask (train/tasks/joint.py)
        # a guided view may label by its classifier's classes; the network's own are in meta
        self.class_names: List[str] = list(class_names if class_names is not None else (data.get("class_names") or []))

    # -- loading --------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path, device: str = "auto", precision: Optional[str] = None, vae=None,
                        backend: str = "torch", onnx=None, check_weights: bool = True) -> "Pipeline":
        """Load a model file. A latent model finds its VAE by itself (see :func:`difforge.codec.load_codec`);
        ``vae`` gives the VAE file's new place when it moved. ``backend="onnx"`` runs the network with
        ONNX Runtime from ``onnx`` (default: the model file's name with .onnx; :mod:`difforge.export.onnx`).
        The metadata is checked (:func:`difforge.modelfile.check_meta`) and NaN/Inf weights are refused
        unless ``check_weights=False`` (``difforge info`` reports them instead)."""
        tensors, meta = load_model_file(path, check_weights=check_weights)
        kind = meta.get("kind", "diffusion")
        if kind in ("vae", "classifier", "upscaler"):
            raise CheckpointError(f"{path} is a {kind} model file, not a diffusion model; give the diffusion model's file (e.g. runs/NAME/checkpoints/ema.safetensors)"
                                  + ("; upscale with it: difforge upscale FILE --input IMG, or sample BASE --upscale FILE" if kind == "upscaler" else ""))
        net = build_network(check_meta(meta, path), tensors, path)
        dev = resolve_device(device)
        prec = resolve_precision(precision or SampleConfig().precision, dev)
        if prec == "fp16":  # sampling in fp16 without loss scaling is risky; bf16/fp32 are safe
            prec = "fp32"
        codec = None
        if meta.get("latent"):
            from ..codec import load_codec

            codec = load_codec(meta["latent"], path, override=vae, device=dev)
        elif vae is not None:
            raise UserError(f"{path} is a pixel-space model; --vae applies to latent models only")
        if backend != "torch" or onnx is not None:
            from ..export.onnx import onnx_backend

            net, prec = onnx_backend(path, backend, onnx), "fp32"
        if isinstance(net, torch.nn.Module):
            net = net.to(memory_format=sampling_memory_format(net, prec))
        return cls(net.to(dev), meta, dev, prec, source=str(path), codec=codec)

    # -- latent models: the sampler's space vs pixels -------------------------------------------
    @property
    def sample_shape(self) -> tuple:
        """(C, H, W) of what the sampler draws: pixels (C + 1 with a joint mask), or a latent model's latents."""
        return self.codec.latent_shape(self.image_size) if self.codec is not None else (
            self.channels + int(self.joint_mask), self.image_size, self.image_size)

    def split_mask(self, x: torch.Tensor):
        """(images (N, C, H, W), masks bool (N, H, W) or None) of sampled pixels: a joint-mask model's
        last channel is its mask, defect where > 0."""
        return (x[:, : self.channels], x[:, self.channels] > 0) if self.joint_mask else (x, None)

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Sampler space -> float pixels in [-1, 1] (the VAE decodes a latent model's latents)."""
        return x.float().clamp(-1, 1) if self.codec is None else self.codec.decode(x)

    # -- description ----------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def resolve_class(self, label: ClassLabel) -> Optional[int]:
        """A class name or index -> index; None for unconditional models or 'no class'."""
        return resolve_class(self.class_names, label)

    def labels_for(self, num: int, class_label: ClassLabel) -> Optional[torch.Tensor]:
        """Labels of a request: one class, ``all`` (num per class, class-major) or random classes."""
        return labels_for(self.class_names, num, class_label)

    def describe(self) -> Dict[str, Any]:
        """What ``difforge info`` shows of the model (:func:`difforge.pipeline.describe.describe`)."""
        from .describe import describe

        return describe(self)

    # -- the denoiser and guidance ----------------------------------------------------------
    def denoiser(self, config: Optional[SampleConfig] = None, **changes) -> Denoiser:
        """The network as samplers see it (``config`` with ``changes``, e.g. ``denoiser(cfg=1.0)``);
        on a guided pipeline with that guidance around it (``cfg`` is then w of two-model guidance
        when it has an unconditional model)."""
        config = self.with_default_cfg((config or SampleConfig()).replace(**changes))
        if config.threshold is not None and self.codec is not None:
            raise UserError("dynamic thresholding (--threshold) bounds pixel values; a latent model's latents are not bounded, leave it out")
        net_classes = len(self.meta["data"].get("class_names") or [])
        if self.prompts is not None:  # a prompt view: y indexes its rows, the last is the unconditional one
            net_classes = self.prompts.count
        den = Denoiser(
            self.net if self.prompts is None else self.prompts,
            self.schedule,
            target=self.target,
            learn_sigma=self.learn_sigma,
            num_classes=net_classes,
            cfg_scale=config.cfg if net_classes else 1.0,
            cfg_rescale=config.cfg_rescale,
            cfg_interval=config.cfg_interval,
            clip_x0=config.clip_x0 and self.codec is None,  # latents are not bounded to [-1, 1]
            threshold=config.threshold,
            autocast=autocast_factory(self.precision, self.device),
        )
        return den if self.guide is None else self.guide.wrap(den, config.cfg, guidance_mode(config.sampler))

    def with_guidance(self, classifier=None, classifier_scale: float = 1.0, uncond_model=None, guide_model=None) -> "Pipeline":
        """A new Pipeline of the same model whose denoiser is guided (see :mod:`difforge.pipeline.guidance`).

        ``classifier``: a noisy-classifier file (``difforge train-classifier``) or a loaded
        ``(net, meta)``, with ``classifier_scale`` s (Dhariwal & Nichol 2021; the ddpm sampler
        gets the mean shift of their Alg. 1, the others the eps shift of Alg. 2). On an
        unconditional model the new pipeline's classes are the classifier's. ``uncond_model``: a
        model file or Pipeline for two-model classifier-free guidance; ``cfg`` is then w of
        eps = (1 + w) eps_c - w eps_u (built-in CFG's scale s = 1 + w). ``guide_model``: a weaker
        model file or Pipeline of the same classes for autoguidance, eps = (1 + w) eps - w eps_weak.
        """
        from .guidance import make_guide

        guide, names = make_guide(self, classifier, classifier_scale, uncond_model, guide_model)
        return Pipeline(self.net, self.meta, self.device, self.precision, self.source, self.codec, guide=guide, class_names=names)

    def guided(self, classifier=None, classifier_scale: float = 1.0, uncond_model=None, sampler: Optional[str] = None) -> "Pipeline":
        """:meth:`with_guidance` (``sampler`` is accepted for older callers; the mode now follows each request's sampler)."""
        return self.with_guidance(classifier, classifier_scale, uncond_model)

    def with_prompts(self, prompt=None, negative_prompt: Optional[str] = None, num: int = 1, class_label: ClassLabel = None, place_contrast="auto", analogy="auto"):
        """A prompt view for ``num`` images per prompt (a text model; "" when no prompt: unconditional
        text), or self for a model without text and no prompt (see :mod:`difforge.pipeline.text`)."""
        from .text import with_prompts
        return with_prompts(self, prompt, negative_prompt, num, class_label, place_contrast, analogy)

    def _for_request(self, options: Dict[str, Any], num: int = 1, class_label: ClassLabel = None) -> "Pipeline":
        """The pipeline a request runs on: guided when ``options`` name a classifier or an unconditional
        model, a prompt view for a text model (:meth:`with_prompts`); those keys are popped."""
        guidance = {k: options.pop(k) for k in GUIDANCE_ARGS if k in options}
        pipe = self if all(guidance.get(k) is None for k in ("classifier", "uncond_model", "guide_model")) else self.with_guidance(**guidance)
        asked = [options.pop(k, d) for k, d in (("prompt", None), ("negative_prompt", None), ("place_contrast", "auto"), ("analogy", "auto"))]
        return pipe.with_prompts(asked[0], asked[1], num, class_label, *asked[2:])

    # -- the batch core -------------------------------------------------------------------
    def request(self, num: int, class_label: ClassLabel, seed: int, seeds: Optional[Sequence[int]]):
        """(labels or None, one seed per image) of a request for ``num`` images."""
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            raise UserError(f"num must be >= 1, got {num!r}")
        refuse_plain_sampling(self.meta, self.net, self.source)
        labels = self.labels_for(num, class_label)
        total = len(labels) if labels is not None else num
        if seeds is None:
            seeds = [seed + i for i in range(total)]
        elif len(seeds) != total:
            raise UserError(f"got {len(seeds)} seeds for {total} images")
        return labels, list(seeds)

    def prepare(self, config: Optional[SampleConfig], options: Dict[str, Any]):
        """(checked SampleConfig, sampler options) of a request: one clear line before any work."""
        config, opts = SampleConfig.split(config, **options)
        config = self.with_default_cfg(config.check())
        check_sampler_options(config.sampler, opts)
        if opts.get("variance") == "learned" and not self.learn_sigma:
            raise UserError(
                f"variance 'learned' (--variance learned) needs a model trained with learn_sigma; "
                f"{self.source or 'this model'} predicts no variance: use fixed_small or fixed_large"
            )
        return config, opts

    @property
    def default_cfg(self) -> float:
        """The guidance strength when a request gives none (pipeline/config.py :func:`default_cfg`):
        built-in CFG's s, measured per image size; with an unconditional model the same strength as
        its w = s - 1; with a weak model (autoguidance) its measured w; a text model's own."""
        return default_cfg(self.image_size, None if self.guide is None else self.guide.second_model, text=bool(self.meta.get("text")))

    @property
    def default_cfg_interval(self):
        """The guidance interval a request left ``"auto"`` gets (config.py :func:`default_cfg_interval`)."""
        return default_cfg_interval(bool(self.meta.get("text")))

    def with_default_cfg(self, config: SampleConfig) -> SampleConfig:
        """``config`` with the model's guidance scale (``cfg`` None) and interval (``"auto"``)."""
        config = config if config.cfg is not None else config.replace(cfg=self.default_cfg)
        return config if config.cfg_interval != "auto" else config.replace(cfg_interval=self.default_cfg_interval)

    def timesteps(self, config: SampleConfig) -> list:
        """The sampler's timesteps from T - 1 (a respacing string in ``steps`` decides by itself)."""
        T = self.schedule.num_steps
        try:
            return sampling_timesteps(T, config.steps or T, config.spacing or default_spacing(config.sampler), schedule=self.schedule)
        except ValueError as e:
            raise UserError(str(e)) from None

    def noise(self, seeds: Sequence[int]):
        """x_T and the per-image generators (advanced past x_T) for ``seeds``."""
        gens = make_generators(seeds, self.device)
        x = randn_like(torch.empty((len(seeds), *self.sample_shape), device=self.device), gens)
        return x, gens

    def sample_batches(self, seeds: Sequence[int], labels: Optional[torch.Tensor], config: SampleConfig, opts: Dict[str, Any], *,
                       timesteps: Optional[list] = None, x_T: Optional[torch.Tensor] = None, progress: bool = False,
                       desc: str = "sample", on_step: Optional[Callable] = None, sampler: Optional[Callable] = None) -> torch.Tensor:
        """The one batch core: float pixels (N, C, H, W) in [-1, 1] on the CPU (C + 1 for a joint-mask
        model: :meth:`split_mask` splits the mask off).

        Image i draws all of its noise from the generator seeded with ``seeds[i]``, so it depends
        on its seed only, not on the batch size. ``x_T`` (N, *sample_shape), when given, replaces
        the starting noise (the generators are still advanced past it, so the sampler noise is the
        same as without it). ``on_step(start, batch_len, i, x_t, x0_pred)`` after every step.
        ``sampler``: a function with the sampler contract in place of ``config.sampler``'s (inpainting).
        """
        if sampler is None and self.meta.get("inputs", {}).get("mask_conditioning"):
            raise UserError(f"{self.source or 'this model'} is a mask-conditioned inpainting model: it needs an image and a mask; "
                            f"use difforge inpaint MODEL --image IMG --mask MASK (Python: pipe.inpaint)")
        refuse_plain_sampling(self.meta, self.net, self.source)  # an upsampler needs its low-res image (pipeline/upscale.py)
        fn = sampler or get_sampler(config.sampler)
        den = self.denoiser(config)
        timesteps = self.timesteps(config) if timesteps is None else timesteps
        n, bs = len(seeds), config.batch_size
        from tqdm import tqdm

        bar = tqdm(total=n * len(timesteps), disable=not progress, desc=f"{desc} {config.sampler}", unit="step", dynamic_ncols=True)
        out = []
        with torch.inference_mode():
            for start in range(0, n, bs):
                batch = list(seeds[start : start + bs])
                x, gens = self.noise(batch)
                if x_T is not None:
                    x = x_T[start : start + len(batch)].to(self.device)
                y = None if labels is None else labels[start : start + len(batch)].to(self.device)

                first_bad = torch.full((), -1, device=self.device)  # the first step with NaN/Inf, kept without a host sync

                def step(i, x_t, x0, _start=start, _b=len(batch), _bad=first_bad):
                    bar.update(_b)
                    _bad.copy_(torch.where((_bad < 0) & ~torch.isfinite(x_t).all(), i, _bad))
                    if on_step is not None:
                        on_step(_start, _b, i, x_t, x0)

                try:
                    x0 = fn(den, x, self.schedule, timesteps, y=y, generator=gens, callback=step, **opts)
                except ValueError as e:  # a sampler / option that does not fit: the user's to fix
                    raise UserError(str(e)) from None
                if not bool(torch.isfinite(x0).all()):
                    raise self._nonfinite(int(first_bad), len(timesteps), start // bs + 1)
                out.append(self.to_pixels(x0).cpu())
        bar.close()
        return torch.cat(out)

    def _nonfinite(self, step: int, num_steps: int, batch: int) -> CheckpointError:
        where = f"at step {step + 1} of {num_steps}" if step >= 0 else "in its result"
        overflow = f"values that overflow in {self.precision} (try --precision fp32), or " if self.precision != "fp32" else ""
        return CheckpointError(
            f"sampling {self.source or 'the model'} gave NaN/Inf values {where} (batch {batch}); likely cause: {overflow}"
            "a model whose training diverged (check its weights with `difforge info FILE`)"
        )

    def sample(self, seeds: Sequence[int], labels: Optional[torch.Tensor] = None, config: Optional[SampleConfig] = None, *,
               progress: bool = False, callback: Optional[Callable] = None, **options) -> torch.Tensor:
        """Float pixels (N, C, H, W) in [-1, 1] for explicit ``seeds`` and ``labels`` (previews, evaluation).

        ``callback(done_images, total_images, step, num_steps)`` reports progress across batches.
        """
        config, opts = self.prepare(config, options)
        timesteps = self.timesteps(config)
        n = len(seeds)
        on_step = None if callback is None else (lambda start, b, i, *_: callback(start, n, i, len(timesteps)))
        return self.sample_batches(list(seeds), labels, config, opts, timesteps=timesteps, progress=progress, on_step=on_step)

    def refuse_joint(self, what: str) -> None:
        """One line for a mode that does not handle a joint-mask model's extra channel yet."""
        if self.joint_mask:
            raise UserError(f"{self.source or 'this model'} generates image+mask pairs (joint mask); {what} is not supported "
                            f"for it: use difforge sample (each image comes with its mask) or difforge inpaint")

    # -- modes ----------------------------------------------------------------------------
    def generate(self, num: int = 16, class_label: ClassLabel = None, *, config: Optional[SampleConfig] = None, seed: int = 0,
                 seeds: Optional[Sequence[int]] = None, progress: bool = False, callback: Optional[Callable] = None, **options) -> Generated:
        """Make images. Image i uses seed ``seed + i`` (or ``seeds[i]``), whatever the batch size.

        ``class_label``: a name or index, ``"all"`` (``num`` images of every class) or None
        (classes in turn for a conditional model). Sampling settings: ``config`` and/or keywords
        naming its fields (``sampler``, ``steps``, ``cfg``, ...; ``steps=None`` runs every
        training step) and sampler options (``variance``, ``s_churn``, ...). ``classifier``,
        ``classifier_scale``, ``uncond_model``: guidance from other files, see :meth:`with_guidance`.
        ``upscale``: a super-resolution model file or Upscaler: the cascade (:mod:`difforge.pipeline.upscale`);
        by default the upsampler a cascade run's file names (``upscale=None``: the images at this model's own size).
        ``prompt`` (a text or a list: ``num`` images each), ``negative_prompt``, ``place_contrast``, ``analogy``: a text model's request (:meth:`with_prompts`).
        """
        from .upscale import LINKED, cascade, prepare_cascade
        upscale = prepare_cascade(self, options.pop("upscale", LINKED))  # checked before any work; None: no cascade
        pipe = self._for_request(options, num, class_label)
        labels, seeds = pipe.request(num, class_label, seed, seeds)
        x = pipe.sample(seeds, labels, config, progress=progress, callback=callback, **options)
        from ..data.io import to_uint8

        x, masks = pipe.split_mask(x)
        out = Generated(to_uint8(x), labels, pipe.class_names, masks=masks)
        return out if upscale is None else cascade(self, out, upscale, seed=seeds[0], progress=progress)

    def trajectory(self, num: int = 4, class_label: ClassLabel = None, **kwargs):
        """Generate like :meth:`generate` and keep snapshots (see :func:`difforge.pipeline.trajectory.trajectory`)."""
        from .trajectory import trajectory

        self.refuse_joint("trajectories (--trajectory, --gif)")
        return trajectory(self._for_request(kwargs, num, class_label), num, class_label, **kwargs)

    def interpolate(self, images=None, seeds: Sequence[int] = (0, 1), class_label: ClassLabel = None, **kwargs):
        """Frames between two seeds or two images (see :func:`difforge.pipeline.interpolate.interpolate`)."""
        from .interpolate import interpolate

        self.refuse_joint("interpolation")
        pipe = self._for_request(kwargs, 1, class_label)
        if pipe.prompts is not None:  # a text model: the view's one row is the prompt (and class)
            if len(pipe.prompt_texts) > 1:
                raise UserError(f"an interpolation follows one prompt; got {len(pipe.prompt_texts)}")
            class_label = 0
        return interpolate(pipe, images, seeds, class_label, **kwargs)

    def inpaint(self, image, mask, num: int = 4, class_label: ClassLabel = None, **kwargs):
        """Fill the white region of ``mask`` in ``image`` (see :func:`difforge.pipeline.inpaint.inpaint`)."""
        from .inpaint import inpaint

        return inpaint(self._for_request(kwargs, num, class_label), image, mask, num, class_label, **kwargs)


__all__ = ["Pipeline", "ClassLabel", "GUIDANCE_ARGS"]
