"""``compile: auto``: train through ``torch.compile`` where it pays for its compile time.

Why: a compiled step fuses what eager mode runs as many small kernels (GroupNorm + SiLU, the
bf16 casts, the elementwise parts of the loss). Measured on a 2-core AMX Xeon in bf16 (one
process at a time, batch 16): unet-tiny at 64 px folded 2 x 2, one thread, 94 -> 117 images/s
(1.24x); the default ``unet`` at 32 px, two threads, 27.7 -> 31.7 (1.15x); the ``unet`` at 64 px,
where the convolutions are nearly all of the step, 13.2 -> 13.3. Never slower per step, but the
first step compiles: 45-140 s on that machine the first time, ~15 s when Inductor's cache already
holds the graphs. So ``auto`` compiles only when

- the toolchain works here: a C++ compiler and Python's headers on the CPU (a tiny function is
  compiled, forward and backward, to find out: ~5 s, cached afterwards), Triton on a GPU; and
- the run is long enough to earn the compile time back: a time budget of at least
  :data:`MIN_MINUTES` minutes, or at least :data:`MIN_STEPS` steps without one.

The choice is printed and written into config.yaml, so a resumed run compiles exactly when the
first one did (a compiled step differs from an eager one by float round-off, so the two are not
mixed inside one bit-exact run).
"""

from __future__ import annotations

import math
import os
import shutil
import sysconfig
from pathlib import Path
from typing import Optional

import torch

from ..config import Config
from ..runtime import resolve_device
from .distributed import DistInfo, device_for
from .logging import get_logger

MIN_MINUTES = 5.0  # a cold compile of unet-tiny took ~1 min of a 12-minute budget and bought 1.24x after it
MIN_STEPS = 2000


def toolchain_problem(device: torch.device) -> Optional[str]:
    """Why ``torch.compile`` cannot run here, or None when a tiny compiled function works."""
    if device.type == "cuda":
        try:
            from torch.utils._triton import has_triton
        except ImportError:
            return "this PyTorch has no Triton"
        return None if has_triton() else "Triton is not installed"
    compilers = [os.environ.get("CXX")] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    if not any(shutil.which(c) for c in compilers):
        return "no C++ compiler (g++ or clang++) on PATH"
    include = sysconfig.get_paths().get("include")
    if not include or not (Path(include) / "Python.h").exists():
        return f"Python's C headers are missing ({include}/Python.h; on Debian: apt install python3-dev)"
    return _tiny_compile_problem(device)


def _tiny_compile_problem(device: torch.device) -> Optional[str]:
    try:
        fn = torch.compile(lambda x: torch.sin(x) * x, dynamic=False)
        x = torch.linspace(-1, 1, 8, device=device, requires_grad=True)
        fn(x).sum().backward()
        ok = torch.allclose(x.grad, torch.cos(x.detach()) * x.detach() + torch.sin(x.detach()), atol=1e-5)
        return None if ok else "a test function compiled to wrong numbers"
    except Exception as e:  # any failure of the toolchain means: train eager
        return f"torch.compile failed on a test function ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"


def long_enough(config: Config, images: int, world_size: int = 1) -> bool:
    """Whether the run is long enough to earn a compile back (see the module docstring): every limit
    it has (time budget, step limit, epochs times the steps of an epoch) allows a long run."""
    tc = config.train
    steps = tc.max_steps
    if tc.epochs:
        per_epoch = math.ceil(images / (tc.batch_size * tc.grad_accum * world_size))
        steps = min(steps or math.inf, tc.epochs * per_epoch)
    if not tc.max_minutes and not steps:
        return False
    return (not tc.max_minutes or tc.max_minutes >= MIN_MINUTES) and (not steps or steps >= MIN_STEPS)


def choose_compile(config: Config, images: int, dist: Optional[DistInfo] = None) -> Config:
    """Settle ``compile: auto`` to True or False for this run (``images``: training images) and
    machine; print why. Every rank decides alike (the same config; the toolchain of one machine)."""
    if config.train.compile != "auto":
        return config
    log, dist = get_logger(), dist or DistInfo()
    device = resolve_device(device_for(dist, config.train.device))
    if config.train.task != "diffusion":
        log.info(f"compile auto: off (measured for diffusion training, not this {config.train.task} run; --compile forces it)")
        return config.override(compile=False)
    if not long_enough(config, images, dist.world_size):
        log.info(f"compile auto: off (the run is shorter than {MIN_MINUTES:g} minutes / {MIN_STEPS} steps: "
                 "the compile would not pay for itself; --compile forces it)")
        return config.override(compile=False)
    problem = toolchain_problem(device)
    if problem:
        log.info(f"compile auto: off ({problem}; training eager)")
        return config.override(compile=False)
    log.info("compile auto: on (torch.compile; the first step compiles, --no-compile trains eager)")
    return config.override(compile=True)


__all__ = ["MIN_MINUTES", "MIN_STEPS", "choose_compile", "long_enough", "toolchain_problem"]
