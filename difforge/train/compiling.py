"""``--compile``: what is checked before a run trains through ``torch.compile``, and why it is not
the default.

Measured on a 2-core AMX Xeon, torch 2.13 (``benchmarks/compile_check.py`` compares a compiled
network's gradients with eager ones; one process at a time, batch 16):

- **bf16 on a CPU gives wrong gradients.** Inductor's code for the backward of a whole UNet under
  bf16 autocast disagrees with eager mode by 70-100% (relative norm) on 141 of unet-tiny's 167
  parameters, and one stride-2 convolution gets none at all; the forward and the loss are the same, and
  ``aot_eager`` (the same graphs without Inductor's code) is right, as is each block compiled alone.
  A 12-minute glyph run trained that way reached a held-out loss of 0.0485 against eager's 0.0392
  and drew blobs instead of letters (judge accuracy 0.65 against 0.945), although compiling made
  its steps 1.24x faster. So ``--compile`` with bf16 on a CPU is refused, naming ``--precision
  fp32`` or ``--no-compile``.
- **fp32 on a CPU is right but barely faster**: unet-tiny at 64 px 54.6 -> 57.1 images/s
  (1.04x) after a 57 s compile. Not worth a default.
- Not measured on a GPU (none was lent), so it is not a GPU default either.

A compiled run needs a working toolchain: a C++ compiler and Python's headers on a CPU, Triton on
a GPU. Without one Inductor fails deep inside the first step; :func:`check_compile` finds out
first by compiling a tiny function (forward and backward, ~5 s, cached afterwards) and stops with
one message naming what is missing.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path
from typing import Optional

import torch

from ..config import Config
from ..errors import ConfigError
from ..runtime import resolve_device, resolve_precision
from .distributed import DistInfo, device_for


def toolchain_problem(device: torch.device) -> Optional[str]:
    """Why ``torch.compile`` cannot run here, or None when a tiny compiled function works."""
    if device.type == "cuda":
        try:
            from torch.utils._triton import has_triton
        except ImportError:
            return "this PyTorch has no Triton"
        return None if has_triton() else "Triton is not installed"
    compilers = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
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
    except Exception as e:  # any failure of the toolchain means: do not compile
        return f"torch.compile failed on a test function ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"


def check_compile(config: Config, dist: Optional[DistInfo] = None) -> None:
    """ConfigError unless a ``compile: true`` run can train correctly through torch.compile here."""
    tc = config.train
    if tc.compile is not True:
        return
    device = resolve_device(device_for(dist or DistInfo(), tc.device))
    if device.type == "cpu" and resolve_precision(tc.precision, device) == "bf16":
        raise ConfigError(
            "--compile with bf16 on a CPU trains on wrong gradients (torch 2.13's Inductor; measured in "
            "difforge/train/compiling.py); use --precision fp32 with --compile, or --no-compile (the default)")
    problem = toolchain_problem(device)
    if problem:
        raise ConfigError(f"--compile cannot run here: {problem}; train without --compile")


__all__ = ["check_compile", "toolchain_problem"]
