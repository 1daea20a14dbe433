"""Settings as dataclasses: defaults, validation and YAML round trip.

Five sections (data, model, diffusion, train, latent), each a dataclass. Field names are unique
across sections, so a flat keyword (``Trainer(batch_size=8)``, ``--batch-size 8``) finds its
section without qualification.
Validation names the field, the bad value and the allowed values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import yaml

from .config_numbers import AUTO_NUMBERS, MAX_IMAGE_SIZE, NUMBERS, OPTIONAL_NUMBERS, check_number  # noqa: F401 (re-exported)
from .errors import ConfigError

SCHEDULES = ("linear", "cosine", "sqrt_linear", "sqrt")
TARGETS = ("eps", "x0", "v")
LOSSES = ("mse", "l1", "huber", "smooth_l1")
OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "linear", "cosine", "warmup_cosine")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULE_SAMPLERS = ("uniform", "loss-second-moment")
LOSS_WEIGHTINGS = ("none", "p2", "min_snr")
TASKS = ("diffusion", "vae", "classifier", "inpaint", "joint", "sr", "sr-regression")  # difforge.train.tasks.TASK_MODULES has one entry each


@dataclass
class DataConfig:
    """Where the images come from and how they are prepared."""

    data: Optional[str] = None  # folder of images; None = the built-in defect dataset
    masks: Optional[str] = None  # mask folder (same relative paths/stems as data) for tasks joint / inpaint
    image_size: int = 64
    channels: Any = "auto"  # 1, 3, or auto: 1 when every image is grey (R = G = B or a 1-channel file), else 3
    conditional: Optional[bool] = None  # None: class sub-folders -> conditional, flat -> not
    labels_from_filenames: bool = False  # flat folder: the class is the file name before its first "_" (improved-diffusion)
    num_classes: Optional[int] = None  # the classes the data must have (IDDM/improved-diffusion --num_classes); None: any
    hflip: bool = False  # plain random mirror images (they reach the samples: prefer augment=flips); on before the presets
    augment: str = ""  # EDM-style augmentations seen by the network as conditioning: any of flips,rot90,translate
    augment_p: float = 0.0  # probability that an image is augmented (0 = off; see difforge/data/augment.py)
    crop_p: float = 0.0  # probability that a micro-batch trains on random crops, the network told where (difforge/data/crops.py)
    crop_size: int = 0  # side of those crops in pixels; 0 = half the image size
    mask_weight: Any = "auto"  # diffusion: a defect-mask pixel's loss weighs 1 + mask_weight; auto: train/loss_masks.py
    skip_bad_images: bool = False
    drop_empty_classes: bool = False  # with skip_bad_images: train without a class whose images are all unreadable
    builtin_per_class: int = 200
    builtin_seed: int = 0
    builtin_materials: str = "metal,wood"  # built-in set: its surfaces, any of metal,wood,concrete (data/builtin.py)
    caption_template: Optional[str] = None  # text models: caption of images without one; {class} = the class name


@dataclass
class ModelConfig:
    """Which network, with which options (passed to ``models.registry.build``)."""

    network: str = "unet-tiny"  # the `fast` preset's (difforge/train/presets.py); "auto" sizes it to the time budget
    network_options: Dict[str, Any] = field(default_factory=dict)
    learn_sigma: bool = False
    text_encoder: Optional[str] = None  # text conditioning: "builtin" (trained jointly) or a local CLIP folder; None = no text


@dataclass
class DiffusionConfig:
    """The forward process and the training objective."""

    diffusion_steps: int = 1000
    noise_schedule: str = "cosine"
    noise_shift: Any = "auto"  # every SNR / shift^2 (diffusion/schedule.py shift_alpha_bar); auto: by image size (train/noise_shift.py)
    target: str = "v"
    loss: str = "mse"
    label_dropout: float = 0.1  # probability of training with the null class (CFG)
    word_dropout: float = 0.0  # text runs (built-in encoder): each caption word left out with this probability
    phrase_dropout: float = 0.0  # text runs (built-in encoder): each caption phrase ("at the top left") left out with this probability
    use_kl: bool = False  # train on the VLB alone (improved-diffusion's RESCALED_KL)
    rescale_learned_sigmas: bool = True  # hybrid VLB term x T/1000 (lambda = 0.001), as improved-diffusion
    schedule_sampler: str = "uniform"  # timesteps: uniform or loss-second-moment (importance sampling)
    loss_weighting: str = "none"  # SNR weighting of L_simple: none, p2 (Choi et al.) or min_snr (Hang et al.)
    p2_gamma: float = 1.0
    p2_k: float = 1.0
    snr_gamma: float = 5.0  # Min-SNR gamma


@dataclass
class TrainConfig:
    """The training loop: run folder, optimisation, precision, checkpoints, previews."""

    task: str = "diffusion"  # what is trained: diffusion, vae or classifier (see difforge/train/tasks/)
    run: str = "default"
    runs_dir: str = "runs"
    epochs: Optional[int] = None
    max_steps: Optional[int] = None
    max_minutes: Optional[float] = None  # stop (with a checkpoint) after this much training time
    batch_size: int = 16
    num_workers: int = 0
    optimizer: str = "adamw"
    lr: Any = "auto"  # peak learning rate; auto: 2e-3 for a new pixel unet-tiny diffusion run, else 1e-3 (train/optim.py choose_lr)
    weight_decay: float = 0.0
    lr_schedule: str = "warmup_cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    ema_decay: float = 0.995
    ema_warmup: bool = True
    # also tracked; the best on held-out images wins. Fixed decays beside ema_decay collapse into one on short runs (the
    # warm-up caps every decay at (1 + n) / (10 + n)), so the default candidates are power-function EMAs whose width is a
    # fraction of the run (EDM2 sigma_rel, train/ema.py): short, and long; ema_decay is the one in between
    ema_extra: List[float] = field(default_factory=list)
    ema_power: List[float] = field(default_factory=lambda: [0.05, 0.2])
    ema_select: bool = True  # hold out a few images and keep the EMA with the lowest denoising loss on them
    keep_all_ema: bool = False  # also write every tracked EMA as checkpoints/ema_<label>.safetensors
    precision: str = "auto"
    grad_accum: int = 1
    grad_clip: Optional[float] = 1.0
    seed: int = 0
    channels_last: Union[bool, str] = "auto"  # auto: probed per network with a time budget (train/autonet.py), else off
    compile: Union[bool, str] = "auto"  # torch.compile the training network; auto: a timed trial where measured faster (train/compiling.py)
    cascade: Union[bool, str] = "auto"  # a smaller model + an upsampler trained side by side (train/cascade.py); auto: CPU runs from 64 px with a budget
    cascade_scale: Union[int, str] = "auto"  # the cascade upsampler's factor, 2 or 4; auto: from the training images, train/cascade_scale.py (a run's config.yaml keeps the number)
    log_every: int = 10
    save_every: int = 0  # steps between numbered checkpoints (0: only last + EMA)
    save_every_epochs: int = 0
    save_start: int = 0  # first epoch at which numbered checkpoints are kept (IDDM start_model_interval)
    checkpoint_every: int = 500  # steps between refreshes of the resumable "last" checkpoint
    preview_every: int = 0  # steps between preview grids (0: only at the end)
    preview_num: int = 16
    preview_sampler: Optional[str] = None  # None: the sampling default (difforge.pipeline.SampleConfig)
    preview_steps: int = 25
    image_format: str = "png"
    device: str = "auto"
    eval_every: int = 0  # steps between FID/KID of EMA samples in metrics.csv (0: off)
    tensorboard: bool = False  # also write metrics, previews and the config to runs/NAME/tb/ (needs difforge[tb])
    eval_real: Optional[str] = None  # folder or reference .npz; default: the training images
    eval_num: int = 256
    eval_metrics: str = "fid,kid"
    eval_features: str = "inception"  # or a TorchScript feature extractor .pt


@dataclass
class LatentConfig:
    """Latent diffusion (``train --latent --vae FILE``) and the VAE that makes its latent space (``train-vae``)."""

    latent: bool = False  # diffuse in the latent space of the VAE file ``vae``
    vae: Optional[str] = None  # VAE model file (from `difforge train-vae`)
    latent_cache: bool = True  # also keep the encoded training set in the run folder (reused on resume)
    latent_channels: int = 4  # train-vae: channels of z
    downsample: int = 8  # train-vae: z is image_size / downsample wide
    kl_weight: float = 1e-4  # train-vae: weight of KL(q(z|x) || N(0, I)) per pixel value (IDDM's mse_kl)
    recon_loss: str = "mse"  # train-vae: mse or l1
    val_data: Optional[str] = None  # train-vae: validation folder (default: fresh built-in images, or the training images)


@dataclass
class SRConfig:
    """Super-resolution training (``difforge train-sr``; difforge/train/tasks/superres.py, difforge/data/degrade.py)."""

    scale: int = 4  # high-res image_size / low-res size
    sr_objective: str = "diffusion"  # diffusion (an SR3-style upsampler) or regression (rdn-sr / srv1, loss l1 or mse)
    sr_down: str = "bicubic"  # the degradation's down-sampling: bicubic (antialiased) or area
    sr_blur: float = 0.0  # Gaussian blur sigma in high-res pixels before down-sampling (0 = none)
    sr_noise: float = 0.0  # std of Gaussian noise added to the low-res image, [-1, 1] scale (0 = none)
    sr_jpeg: int = 0  # JPEG quality of the low-res image (0 = no JPEG)
    noise_aug: Any = "auto"  # diffusion: the low-res input is noised at a level s ~ U[0, noise_aug] (Ho et al. 2022); 0 = off; auto: a cascade's x4 upsampler 0.15, else 0 (train/cascade_scale.py)
    sr_residual: bool = True  # diffusion: diffuse the scaled residual x - bicubic(z), so an untrained upsampler is bicubic
    sr_val_data: Optional[str] = None  # validation folder: held-out PSNR / SSIM every eval_every steps (train/tasks/sr_validation.py)


SECTIONS = {"data": DataConfig, "model": ModelConfig, "diffusion": DiffusionConfig, "train": TrainConfig, "latent": LatentConfig, "sr": SRConfig}
SECTION_TYPES = {name: {f.name: f.type for f in fields(klass)} for name, klass in SECTIONS.items()}  # annotations as text
VAE_DOWNSAMPLE = (2, 4, 8, 16)
RECON_LOSSES = ("mse", "l1")


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not allowed; choose one of {', '.join(map(str, allowed))}")


def _check_numbers(cfg: "Config") -> None:
    where = field_sections()
    for name, (integer, lo, hi, lo_open, hi_open, why) in NUMBERS.items():
        value = getattr(getattr(cfg, where[name]), name)
        if value is None and name in OPTIONAL_NUMBERS or value == "auto" and name in AUTO_NUMBERS:
            continue
        check_number(name, value, lo, hi, lo_open, hi_open, integer, why)
    for name, section in where.items():  # every setting declared `bool` takes true or false only (a YAML "yes" is a text)
        if SECTION_TYPES[section][name] == "bool" and not isinstance(getattr(getattr(cfg, section), name), bool):
            raise ConfigError(f"{name}={getattr(getattr(cfg, section), name)!r} must be true or false")


@dataclass
class Config:
    """The full, resolved settings of a run; saved as ``config.yaml`` in the run folder."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)
    sr: SRConfig = field(default_factory=SRConfig)

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Config":
        d = dict(d or {})
        unknown = set(d) - set(SECTIONS)
        if unknown:
            raise ConfigError(f"unknown config section(s) {sorted(unknown)}; sections are {', '.join(SECTIONS)}")
        parts = {}
        for name, klass in SECTIONS.items():
            section = d.get(name) or {}
            if not isinstance(section, dict):
                raise ConfigError(f"config section '{name}' must be a mapping, got {type(section).__name__}")
            names = {f.name for f in fields(klass)}
            bad = set(section) - names
            if bad:
                raise ConfigError(f"unknown field(s) {sorted(bad)} in section '{name}'; fields are {', '.join(sorted(names))}")
            parts[name] = klass(**section)
        cfg = cls(**parts)
        cfg.validate()
        return cfg

    @classmethod
    def load(cls, path) -> "Config":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            d = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
        if not isinstance(d, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections")
        return cls.from_dict(d)

    def to_dict(self) -> Dict[str, Any]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def override(self, **flat) -> "Config":
        """A copy with flat ``field=value`` overrides applied (None values are ignored)."""
        d = self.to_dict()
        where = field_sections()
        for key, value in flat.items():
            if value is None:
                continue
            if key not in where:
                raise ConfigError(f"unknown setting {key!r}; see `difforge train --help` for the settings")
            d[where[key]][key] = value
        return Config.from_dict(d)

    # -- validation ------------------------------------------------------------------------
    def validate(self) -> None:
        dc, mc, fc, tc = self.data, self.model, self.diffusion, self.train
        _check_numbers(self)
        _choice("channels", dc.channels, (1, 3, "auto"))
        _check_augment(dc.augment)
        _check_materials(dc.builtin_materials)
        _check_list("ema_extra", tc.ema_extra, lambda d: 0.0 <= d < 1.0, "EMA decays in [0, 1), e.g. [0.99, 0.999]")
        _check_list("ema_power", tc.ema_power, lambda s: 0.0 < s < 0.28, "relative EMA widths in (0, 0.28), e.g. [0.05, 0.2]")
        _choice("noise_schedule", fc.noise_schedule, SCHEDULES)
        _choice("target", fc.target, TARGETS)
        _choice("loss", fc.loss, LOSSES)
        if fc.noise_schedule in ("linear", "sqrt_linear") and fc.diffusion_steps <= 20:
            raise ConfigError(f"diffusion_steps={fc.diffusion_steps} is too few for the {fc.noise_schedule} schedule (needs > 20; its last beta is 20/T); use more steps or noise_schedule=cosine")
        _choice("schedule_sampler", fc.schedule_sampler, SCHEDULE_SAMPLERS)
        _choice("loss_weighting", fc.loss_weighting, LOSS_WEIGHTINGS)
        if fc.use_kl and fc.loss_weighting != "none":
            raise ConfigError(
                f"loss_weighting={fc.loss_weighting!r} weights L_simple, which use_kl=true does not train; "
                "set loss_weighting=none or use_kl=false"
            )
        if fc.use_kl and fc.loss != "mse":
            raise ConfigError(f"loss={fc.loss!r} has no effect with use_kl=true (the VLB is the loss); leave loss=mse")
        if not isinstance(mc.network_options, dict):
            raise ConfigError("network_options must be a mapping of network settings")
        _choice("task", tc.task, TASKS)
        _choice("optimizer", tc.optimizer, OPTIMIZERS)
        _choice("lr_schedule", tc.lr_schedule, LR_SCHEDULES)
        _choice("precision", tc.precision, PRECISIONS)
        _choice("image_format", tc.image_format, ("png", "jpg"))
        _choice("channels_last", tc.channels_last, (True, False, "auto"))
        _choice("compile", tc.compile, (True, False, "auto"))
        _choice("cascade", tc.cascade, (True, False, "auto"))
        _choice("cascade_scale", tc.cascade_scale, (2, 4, "auto"))
        if not tc.run or "/" in tc.run or tc.run in (".", ".."):
            raise ConfigError(f"run={tc.run!r} must be a plain folder name (no '/')")
        if dc.mask_weight not in (0, "auto") and (tc.task != "diffusion" or self.latent.latent):
            raise ConfigError(f"mask_weight weighs the loss of a pixel-space diffusion run, not "
                              f"{'a latent run' if self.latent.latent else f'task={tc.task!r}'}; drop --mask-weight")
        if dc.mask_weight not in (0, "auto") and fc.use_kl:
            raise ConfigError("mask_weight weighs L_simple, which use_kl=true does not train; drop --mask-weight or use_kl")
        self._validate_latent()

    def _validate_latent(self) -> None:
        lc, tc = self.latent, self.train
        if lc.latent and not lc.vae:
            raise ConfigError("latent=true needs vae: the VAE model file (--vae FILE; train one with `difforge train-vae`)")
        if lc.latent and tc.task != "diffusion":
            raise ConfigError(f"latent=true applies to diffusion training, not task={tc.task!r}")
        _choice("downsample", lc.downsample, VAE_DOWNSAMPLE)
        _choice("recon_loss", lc.recon_loss, RECON_LOSSES)
        _choice("sr_objective", self.sr.sr_objective, ("diffusion", "regression"))
        _choice("sr_down", self.sr.sr_down, ("bicubic", "area"))


AUGMENTATIONS = ("flips", "rot90", "translate")


def _check_list(name: str, value, ok, what: str) -> None:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and ok(v) for v in value):
        raise ConfigError(f"{name}={value!r} must be a list of {what}")


def _check_augment(text) -> None:
    names = [a.strip() for a in str(text or "").split(",") if a.strip()]
    if not isinstance(text, str) or any(a not in AUGMENTATIONS for a in names):
        raise ConfigError(f"augment={text!r} is not allowed; give a comma-separated list of {', '.join(AUGMENTATIONS)} (or nothing)")


BUILTIN_MATERIALS = ("metal", "wood", "concrete")  # the built-in set's possible surfaces (data/surfaces.py draws them)


def known_materials(names) -> bool:
    """True when ``names`` are surfaces of the built-in set, at least one and none twice."""
    names = tuple(names)
    return bool(names) and len(set(names)) == len(names) and all(m in BUILTIN_MATERIALS for m in names)


def _check_materials(text) -> None:
    if not known_materials(materials_of(text) if isinstance(text, str) else ()):
        raise ConfigError(f"builtin_materials={text!r} is not allowed; give a comma-separated list of distinct "
                          f"{', '.join(BUILTIN_MATERIALS)}")


def materials_of(text) -> tuple:
    """``"metal, wood"`` -> ("metal", "wood"): the built-in set's surfaces from the config string."""
    return tuple(m.strip() for m in str(text).split(",") if m.strip())


def field_sections() -> Dict[str, str]:
    """Map every field name to its section name (names are unique across sections)."""
    out: Dict[str, str] = {}
    for name, klass in SECTIONS.items():
        for f in fields(klass):
            assert f.name not in out, f"duplicate config field {f.name}"
            out[f.name] = name
    return out


def parse_int_tuple(text: str, name: str) -> Tuple[int, ...]:
    """'1,2,2' -> (1, 2, 2) with a clear error."""
    try:
        return tuple(int(p) for p in str(text).replace(" ", "").strip("()[]").split(",") if p)
    except ValueError:
        raise ConfigError(f"{name}={text!r} must be a comma-separated list of integers, e.g. 1,2,2") from None
