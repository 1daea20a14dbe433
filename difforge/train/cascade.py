"""``cascade``: a run asked for 64 px (or more) on a CPU trains a small model and an upsampler (x2 from a half-size
model, or x4 from a quarter-size one: :mod:`difforge.train.cascade_scale` decides from the images) side by side,
each on half the cores, and the small model's file names its upsampler, so
``difforge sample`` writes full-size images without a flag (:func:`difforge.pipeline.upscale.prepare_cascade`).

Why (issue 16, measured on a 2-core AMD EPYC, README "Measured in session 28"): in 12 minutes one
64 px model, even with 2 x 2 pixels folded into channels, learns the classes but not the fine
texture -- the built-in defects' judge distance stayed 3.0-9.2x the real-vs-real floor, and a
scratch came out as specks. At 32 px the same 12 minutes meet every target, and a residual
diffusion upsampler (``train-sr``: it diffuses only what bicubic up-sampling misses) is local work
that it learns well (1.3x the floor on real 32 px inputs). Two one-thread processes on two cores
also do 2x the work of one, where one two-thread process does 1.5-1.75x. A user's two commands side
by side for 12 minutes reached 2.4x the floor (the cascade of three base seeds: 1.5-4.0x).

``auto`` (the default) decides for a new pixel-space, class or flat diffusion run (no text, masks,
VAE, fine-tune or several processes) on a CPU with at least two threads, at least :data:`MIN_SIZE` px, with a
time budget and without a patch size of the user's: only there was it measured. ``--cascade
false`` trains one full-size model; ``--cascade true`` also cascades elsewhere (a GPU, a run
limited by steps). The decision goes into config.yaml as true / false, and the run's
``image_size`` becomes the full size over the factor (the half size by default); the upsampler is its own run, ``RUN/upsampler``, with its own
config, log, checkpoints and resume: resuming the base resumes it. Its console output goes to
``RUN/upsampler.log``.

``--noise-aug S`` trains the upsampler with noise-conditioning augmentation (train-sr's flag); ``auto`` (the default)
is off for an x2 cascade because the textures lose with it, and 0.15 for an x4 one. Measured in session 30 (README): the upsampler trained on clean real
32 px glyphs is at the real-vs-real floor on them, but grain of 6/255 in its input multiplies its distance 94-fold,
and the base's samples carry such grain. S = 0.15 / 0.05 cut the glyph cascade's distance 25% / 17% and raised
the defect textures' 36% / 7% (the last on two upsampler seeds).

``--cascade-scale 4`` trains a quarter-size model (16 px for 64 px) and an x4 upsampler instead. Measured in session 32
(README, "A quarter-size base"): a 16 px model makes 2.5x the steps of a 32 px one in the same minutes, and shapes
are decided at that scale, so the glyphs' distance fell from 8.8 to 4.9-5.8 (the x4 upsampler alone on real 16 px glyphs:
1.96, at 1.07 for x2); but texture is not in a 16 px image, and the x4 upsampler cannot invent it (real 16 px
defects: 16.3 against 6.2 for x2), so the defects rose from 13.05 to 24.4. Without ``--noise-aug`` the x4 upsampler
turns the 16 px model's grain into speckle (glyphs 18.7), so an x4 run without it says so. Since session 33 the 16 px
base trains with less noise (``noise_shift: auto``, :mod:`difforge.train.noise_shift`), which took the glyphs to
2.4-3.1 (x4 with ``--noise-aug``). ``cascade_scale: auto`` (the default) picks the factor from the training images
(:mod:`difforge.train.cascade_scale`: x4 where a quarter-size copy keeps them, x2 for fine texture), and
``noise_aug: auto`` gives an x4 upsampler its noise augmentation. The factor a run used is written into its
config.yaml, and a config.yaml from before the setting is an x2 cascade (:data:`LEGACY_SCALE`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from ..config import Config
from ..errors import ConfigError
from ..runtime import resolve_device
from .cascade_scale import FALLBACK_SCALE, choose_scale, noise_aug_for

LEGACY_SCALE = 2  # the factor of a run whose config.yaml predates ``cascade_scale`` (every cascade was x2 then)
MIN_SIZE = 64  # auto cascades from this image size: at 32 px one model meets every target (README)
UPSAMPLER_RUN = "upsampler"  # RUN/upsampler: the upsampler's run folder
CONSOLE_LOG = "upsampler.log"  # RUN/upsampler.log: what its process printed
CONFIG_FILE = "upsampler.yaml"  # RUN/upsampler.yaml: the settings it started from
STOP_GRACE_S = 30.0  # after the base stopped early: how long the upsampler may take to see the same Ctrl-C before it is told

# settings of the base run the upsampler shares (its network, schedule, LR and EMA are train-sr's own defaults)
SHARED_TRAIN = ("seed", "max_minutes", "max_steps", "epochs", "batch_size", "precision", "device", "log_every",
                "checkpoint_every", "image_format", "tensorboard")

RESUME_LIMITS = ("max_minutes", "max_steps", "epochs")  # a resumed base passes these on to its upsampler


def why_not(config: Config, new: bool, dist=None, threads: Optional[int] = None, pretrain: Optional[str] = None) -> Optional[str]:
    """None when ``cascade: auto`` cascades this run, else the reason it does not."""
    c, dc, tc = config, config.data, config.train
    if not new:
        return "a resumed run keeps what it was"
    if pretrain:
        return "a fine-tune keeps the size of the model it starts from"
    if tc.task != "diffusion" or c.latent.latent or c.model.text_encoder:
        return "only plain pixel-space diffusion runs are measured as cascades"
    if dc.masks or dc.mask_weight not in (0, 0.0, "auto"):
        return "a run with defect masks trains at full size"
    if dist is not None and dist.enabled:
        return "a run of several processes trains at full size"
    scale = new_scale(config) or FALLBACK_SCALE  # auto: x4 only where it fits (cascade_scale.choose_scale)
    if dc.image_size < MIN_SIZE or dc.image_size % (2 * scale):
        return f"cascades start at {MIN_SIZE} px (sizes divisible by {2 * scale} for an x{scale} upsampler)"
    if not tc.max_minutes:
        return "without a time budget (--max-minutes) the run trains at full size"
    if "patch_size" in c.model.network_options:
        return "a patch size was given for the full-size network"
    if resolve_device(tc.device).type != "cpu":
        return "measured on CPUs only"
    if (threads if threads is not None else torch.get_num_threads()) < 2:
        return "one thread cannot train two models side by side"
    return None


def new_scale(config: Config) -> Optional[int]:
    """The factor a new cascade run was given: ``cascade_scale``, or None for auto (the images decide, in
    :func:`choose_cascade`)."""
    value = config.train.cascade_scale
    return None if value == "auto" else int(value)


def scale_of(config: Config) -> int:
    """The upsampler's factor of a run already decided: its ``cascade_scale``; a config.yaml written before
    the setting existed says auto there, and its cascade is x2 (:data:`LEGACY_SCALE`)."""
    value = config.train.cascade_scale
    return LEGACY_SCALE if value == "auto" else int(value)


def choose_cascade(config: Config, new: bool, dist=None, log=None, pretrain: Optional[str] = None) -> Config:
    """``cascade: auto`` settled to true or false; a new cascade run's ``cascade_scale`` is settled to a number
    (auto: from its training images, :func:`difforge.train.cascade_scale.choose_scale`) and its ``image_size`` becomes
    the full size divided by it; ``noise_aug: auto`` is settled for every run (:func:`~.cascade_scale.noise_aug_for`)."""
    tc = config.train
    if tc.cascade == "auto":
        reason = why_not(config, new, dist, pretrain=pretrain)
        config = config.override(cascade=reason is None)
    elif tc.cascade and new:
        if tc.task != "diffusion" or config.latent.latent or config.model.text_encoder:
            raise ConfigError("cascade=true cascades a pixel-space class or flat diffusion model only; drop --cascade")
        scale = new_scale(config) or FALLBACK_SCALE
        if config.data.image_size % (2 * scale):
            raise ConfigError(f"cascade=true with an x{scale} upsampler needs an image size divisible by {2 * scale}, "
                              f"got {config.data.image_size}")
        if dist is not None and dist.enabled:
            raise ConfigError("cascade=true trains one process beside its upsampler; drop --distributed or --cascade")
    def no_upsampler() -> str:  # why a run given an upsampler's setting trains none (tc: as given; an explicit false has no why_not)
        return "cascade false: --cascade false or a preset" if tc.cascade is False else why_not(config, new, dist, pretrain=pretrain)

    if not config.train.cascade and config.train.task == "diffusion" and config.sr.noise_aug not in ("auto", 0, 0.0):
        raise ConfigError(f"--noise-aug {config.sr.noise_aug:g} is the cascade upsampler's and this run trains no upsampler "
                          f"({no_upsampler()}); drop --noise-aug")
    if not config.train.cascade and new and tc.cascade_scale != "auto":
        raise ConfigError(f"--cascade-scale {tc.cascade_scale} is the cascade upsampler's factor and this run trains no "
                          f"upsampler ({no_upsampler()}); drop --cascade-scale")
    size, scale, why = config.data.image_size, None, None
    if config.train.cascade and new:
        scale = new_scale(config)
        if scale is None:
            scale, why = choose_scale(config)
        config = config.override(image_size=size // scale, cascade_scale=scale)
    if config.sr.noise_aug == "auto":
        config = config.override(noise_aug=noise_aug_for(config))
    if scale and log is not None:
        aug = f" (noise augmentation {config.sr.noise_aug:g})" if config.sr.noise_aug else ""
        log.info(f"cascade: {size} px as a {size // scale} px model and an x{scale} upsampler{aug} trained side by side, "
                 f"on half the threads each ({CONSOLE_LOG} in the run folder; --cascade false: one {size} px model)")
        if why:
            log.info(f"cascade scale auto: x{scale}, {why}")
        if scale == 4 and not config.sr.noise_aug:
            log.info("cascade: an x4 upsampler without --noise-aug forgives none of the small model's grain (measured on "
                     "glyphs in 12 minutes: distance 18.7 plain, 2.4-3.2 with --noise-aug 0.15; README)")
    return config


def full_size(config: Config) -> int:
    """The size a cascade run's samples come out at."""
    return config.data.image_size * scale_of(config)


def link(config: Config) -> Dict[str, Any]:
    """The model file's ``cascade`` entry: where the upsampler's file is (relative to the base's checkpoints folder first)."""
    run_dir = Path(config.train.runs_dir) / config.train.run
    file = run_dir / UPSAMPLER_RUN / "checkpoints" / "ema.safetensors"
    return {"upsampler_relpath": f"../{UPSAMPLER_RUN}/checkpoints/ema.safetensors", "upsampler_path": str(file.resolve()),
            "scale": scale_of(config), "image_size": full_size(config)}


def upsampler_config(config: Config) -> Config:
    """The upsampler's settings: train-sr's defaults (measured as the cascade's) on the base's data at full size,
    with the base run's ``noise_aug`` (``difforge train --noise-aug``; auto: by the factor, :mod:`.cascade_scale`)."""
    import dataclasses

    data = dataclasses.asdict(config.data)
    data.update(image_size=full_size(config), channels="auto" if config.data.channels == "auto" else config.data.channels)
    shared = {k: getattr(config.train, k) for k in SHARED_TRAIN}
    run_dir = Path(config.train.runs_dir) / config.train.run
    return Config().override(**data, **shared, task="sr", scale=scale_of(config), run=UPSAMPLER_RUN, runs_dir=str(run_dir), cascade=False,
                              noise_aug=config.sr.noise_aug)


class Upsampler:
    """The upsampler's training process, started beside the base run and waited for at its end."""

    def __init__(self, proc: subprocess.Popen, run_dir: Path, log):
        self.proc, self.run_dir, self.log = proc, run_dir, log

    @classmethod
    def start(cls, config: Config, threads: int, log) -> "Upsampler":
        """Start (or resume) the upsampler run of base run ``config`` on ``threads`` threads (:func:`split_threads`)."""
        base_dir = Path(config.train.runs_dir) / config.train.run
        run_dir = base_dir / UPSAMPLER_RUN
        cmd = [sys.executable, "-m", "difforge", "train-sr", "--quiet"]
        if (run_dir / "checkpoints" / "state.safetensors").exists():  # resumed with the base's limits (a resume may raise them)
            cmd += ["--resume", str(run_dir)]
            cmd += [arg for key in RESUME_LIMITS if getattr(config.train, key) is not None
                    for arg in (f"--{key.replace('_', '-')}", str(getattr(config.train, key)))]
        else:
            from ..atomic import write_text

            write_text(base_dir / CONFIG_FILE, upsampler_config(config).to_yaml())
            cmd += ["--config", str(base_dir / CONFIG_FILE)]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        console = open(base_dir / CONSOLE_LOG, "ab")
        try:
            proc = subprocess.Popen(cmd, stdout=console, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        finally:
            console.close()
        log.info(f"upsampler: training in {run_dir} (process {proc.pid}, {threads} thread{'s' * (threads != 1)}; "
                 f"its output: {base_dir / CONSOLE_LOG})")
        return cls(proc, run_dir, log)

    def finish(self, stopped_early: bool) -> Optional[int]:
        """Wait for the upsampler and say how it ended; ``stopped_early``: the base was stopped (Ctrl-C,
        SIGTERM or an error), so the upsampler is told too unless the same Ctrl-C reached it."""
        t0 = time.monotonic()
        if stopped_early:
            try:
                self.proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)  # it finishes its step and saves, as after Ctrl-C
        elif self.proc.poll() is None:
            self.log.info(f"waiting for the upsampler to finish its budget ({self.run_dir.parent / CONSOLE_LOG})...")
        try:
            rc = self.proc.wait()
        except KeyboardInterrupt:  # the same Ctrl-C reached it: let it save
            rc = self.proc.wait()
        model = self.run_dir / "checkpoints" / "ema.safetensors"
        waited = time.monotonic() - t0
        if rc == 0 and model.exists():
            self.log.info(f"upsampler model file: {model}" + (f" (waited {waited:.0f} s)" if waited >= 1 else ""))
        elif rc in (130, -signal.SIGTERM) and model.exists():
            self.log.info(f"upsampler stopped early; resume both with: difforge train --resume {self.run_dir.parent}")
        else:
            self.log.info(f"the upsampler failed (exit status {rc}); see {self.run_dir.parent / CONSOLE_LOG}. "
                          "The base model samples at its own size with --upscale none")
        return rc


def split_threads() -> Tuple[int, int]:
    """``(this process's threads, the upsampler's)``: the base keeps the larger half of its threads."""
    total = torch.get_num_threads()
    mine = max(1, (total + 1) // 2)
    torch.set_num_threads(mine)
    return mine, max(1, total - mine)


__all__ = ["CONSOLE_LOG", "LEGACY_SCALE", "MIN_SIZE", "UPSAMPLER_RUN", "Upsampler", "choose_cascade", "full_size",
           "link", "new_scale", "scale_of", "split_threads", "upsampler_config", "why_not"]
