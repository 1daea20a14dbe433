"""``--compile``: how a run trains through ``torch.compile``, what is checked, and when ``auto`` (the
default) tries it.

Measured on a 2-core AMX Xeon, torch 2.13 (``benchmarks/compile_check.py`` compares a compiled
network's gradients with fp32 eager ones, next to eager bf16's own round-off):

- **Inductor miscompiled the backward of nearest-neighbour upsampling in bf16 on a CPU.** With the
  networks calling ``F.interpolate(mode="nearest")`` the compiled forward and loss were right, but
  every layer below the UNet's last upsampling (136 of unet-tiny's 167 parameters; 144 of the
  ADM's 335) got no gradient at all; ``aot_eager`` (the same graphs without Inductor's code) was
  right, so was each block compiled alone or the network with any graph break. A 12-minute run
  trained that way drew blobs (held-out loss 0.0485 against eager's 0.0392). The networks now
  upsample through :func:`difforge.models.layers.upsample_nearest2x`, which under compile writes
  the same values as a broadcast and a reshape, whose backward Inductor gets right: unet,
  unet-tiny (NCHW and channels_last, 32 px and 64 px folded), adm, cspdarkunet and dit train on
  gradients as close to fp32 as eager bf16's own. (Turning off Inductor's horizontal fusion
  fixed the UNet but not the ADM; turning off all fusion fixed both, at the cost of the point.)
- **Every compiled run checks itself** (:func:`gradient_problem`, from the trainer's step): its
  compiled gradients on one of its own batches against eager ones, before a compiled step
  trains. A disagreement -- a network or a PyTorch this was not measured on -- is logged and the
  run trains eagerly; it never trains silently on wrong gradients.
- **Speed** (bf16, channels_last, batch 16, 2 threads, images/s, eager -> compiled; one process at
  a time): unet-tiny at 32 px 134.5 -> 173.7 and 130.7 -> 168.6 (**1.29x**, difforge's fused
  AdamW), 130.1 -> 154.0 (1.18x, ``benchmarks/train_speed.py --compile off,on``, foreach AdamW);
  the default unet at 32 px 34.0 -> 35.7, 35.0 -> 36.0 and 32.6 -> 35.0 (1.01-1.07x: difforge's
  channels_last GroupNorm backward already does much of what fusion would). The compile takes
  54-135 s cold and 15-27 s from Inductor's on-disk cache.
- **``compile: auto``, the default** (:func:`choose_compile`): the compile is one to two minutes
  of the budget, so it is worth trying only where a network was measured to gain enough to earn it
  back (:data:`MEASURED_FASTER`: unet-tiny, ~15% more steps net of a cold compile in 12 minutes;
  the default unet would lose its compile time) and only in a run with a time budget of at least
  :data:`MIN_MINUTES` (a run limited by steps stays eager and reproducible whatever the machine's
  load, as with ``channels_last: auto``). Such a run is a **trial** (:class:`Trial`): it times
  :data:`TIMED_STEPS` eager steps, compiles and checks, times as many compiled ones and keeps the
  compiled network only when it is :data:`GAIN` times faster here -- another CPU, another PyTorch
  or a GPU decide for themselves. ``--compile`` (true) always compiles, ``--no-compile`` never.
- Not measured on a GPU (none was lent): ``auto`` does not try it there.

A compiled run needs a working toolchain: a C++ compiler and Python's headers on a CPU, Triton on
a GPU. Without one Inductor fails deep inside the first step; :func:`choose_compile` finds out
first by compiling a tiny function (forward and backward, ~5 s, cached afterwards) and stops with
one message naming what is missing.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import sysconfig
from pathlib import Path
from typing import Callable, Optional, Tuple

import torch

from ..config import Config
from ..errors import ConfigError
from ..runtime import resolve_device
from .distributed import DistInfo, all_reduce_mean, device_for
from .logging import get_logger
from .rng import StepRNG, seed_global


def compile_network(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``torch.compile(net)`` on ``device`` (one place for a run's compile settings).

    ``dynamic=False``: a graph per input shape. A run sees one shape, or two with ``--crop-p``
    (crops and whole images); on that second shape Inductor's automatic dynamic shapes failed
    for a folding UNet (torch 2.13: "cannot determine truth value of Relational" on a symbolic
    stride), while two static graphs compile once each and stay as fast as one."""
    return torch.compile(net, dynamic=False)


NOT_YET = "not yet"
""":func:`gradient_problem`'s answer while too few parameters have a gradient to tell."""


def gradient_problem(eager: torch.nn.Module, compiled: torch.nn.Module, loss: Callable[[torch.nn.Module], torch.Tensor],
                     autocast: Callable) -> Optional[str]:
    """Why ``compiled`` must not train, None when it may, or :data:`NOT_YET`: one batch's
    gradients, compiled against eager.

    ``loss(net)`` is the run's loss on one fixed batch (the same noise each call). First eager in
    fp32, the reference: when fewer than half the parameters get a gradient (a fresh network whose
    output layer starts at zero passes one to that layer only, so a miscompiled backward would go
    unseen) the answer is NOT_YET and nothing is compiled. Else eager and compiled in the run's
    precision (``autocast``) and eager in bf16: a parameter is off when the compiled gradient's
    relative distance to the reference exceeds twice the larger of eager's own in the run's
    precision and in bf16, plus 0.02. The bf16 pass measures how ill-conditioned each gradient is:
    early in training, behind a GroupNorm of nearly constant groups, a compiled fp32 network's
    different rounding moved some gradients by 9-17% (unet with 16 channels, step 2), which a
    2% rule refused. A miscompile that matters (the one seen: whole layers with no gradient) is
    100% off. Distances are relative to the parameter's gradient, or to 1% of a typical one where
    that is smaller. Leaves every ``.grad`` as None.
    """
    def grads(net, context):
        eager.zero_grad(set_to_none=True)
        with context():
            value = loss(net)
        value.float().backward()
        out = {n: p.grad.detach().float().clone() for n, p in eager.named_parameters() if p.grad is not None}
        eager.zero_grad(set_to_none=True)
        return out

    reference = grads(eager, contextlib.nullcontext)
    checked = {n: g for n, g in reference.items() if float(g.norm()) > 0}
    if len(checked) < 0.5 * sum(1 for p in eager.parameters() if p.requires_grad):
        return NOT_YET
    run_eager, run_compiled = grads(eager, autocast), grads(compiled, autocast)
    device = next(eager.parameters()).device
    bf16 = {}  # how ill-conditioned each gradient is (a GPU without bf16: the run's own precision alone says)
    if device.type != "cuda" or torch.cuda.is_bf16_supported():
        bf16 = grads(eager, functools.partial(torch.autocast, device.type, dtype=torch.bfloat16))

    # a gradient that is zero in exact arithmetic (a conv's bias before a GroupNorm with a group per
    # channel) is round-off in any precision: distances are taken relative to at least 1% of the
    # network's typical gradient size per element, not to that round-off
    typical = torch.tensor([float(g.norm()) / g.numel() ** 0.5 for g in checked.values()]).median().item()

    def distance(g: Optional[torch.Tensor], ref: torch.Tensor) -> float:
        scale = max(float(ref.norm()), 0.01 * typical * ref.numel() ** 0.5)
        return 1.0 if g is None else float((g - ref).norm()) / scale

    compiled_off = {n: distance(run_compiled.get(n), g) for n, g in checked.items()}
    off = {n: d for n, d in compiled_off.items()
           if d > 2 * max(distance(run_eager.get(n), checked[n]), distance(bf16.get(n, checked[n]), checked[n])) + 0.02}
    if not off:
        return None
    worst = max(off, key=off.get)
    return f"{len(off)} of {len(checked)} parameters' gradients are off (worst: {worst}, {off[worst]:.0%} from eager fp32)"


def check_in_step(trainer, data, plan, step: int) -> None:
    """From ``trainer``'s step ``step``, before it trains: switch it to its compiled network once
    that network's gradients on this step's first batch agree with eager mode's, or give the
    compile up with a warning (:func:`gradient_problem`): Inductor has been measured to miscompile
    a bf16 backward, and a wrong gradient trains silently. Undecided (a fresh network: only its
    zero-initialised output layers have a gradient), the step trains eagerly and the next checks
    again. Every rank decides alike; the time taken (the compile) is set-up for the budget's pacer."""
    tc = trainer.config.train
    pacer = getattr(trainer, "pacer", None)
    t0 = pacer.clock() if pacer else 0.0

    def loss(net):
        rng = StepRNG.for_step(tc.seed, step, plan.global_batch, plan.local_slice())
        seed_global(tc.seed, step)
        batch = plan.batch(step * tc.grad_accum, trainer.task, data, rng, trainer.device, tc.channels_last is True)
        return trainer.task.loss(net, batch, rng)["loss"].mean()

    problem = gradient_problem(trainer.net, trainer.compiled_net, loss, trainer.autocast)
    wrong = problem not in (None, NOT_YET)
    votes = all_reduce_mean(torch.tensor([float(problem == NOT_YET), float(wrong)]), trainer.dist)
    if pacer:
        pacer.note_setup(pacer.clock() - t0)
    if votes[0] > 0 and votes[1] == 0:
        return
    trainer._compile_checked = True
    if votes[1] > 0:
        trainer.log.warning(f"--compile: torch.compile's gradients for this network disagree with eager mode here "
                            f"({problem if wrong else 'on another rank'}); training without compiling")
        trainer.compiled_net = None
        return
    trainer.log.info(f"--compile: the compiled network's gradients agree with eager mode's (step {step}); training compiled")
    trainer.train_net = trainer._wrap_ddp(compiled=True)


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


MEASURED_FASTER = ("unet-tiny",)  # networks whose compiled step was measured >= 1.15x eager here (the module docstring)
MIN_MINUTES = 10.0  # a cold compile (1-2 min) costs less than unet-tiny's compiled gain earns back from here
TIMED_STEPS = 6  # eager steps, then compiled steps, timed by a trial (their medians are compared)
GAIN = 1.05  # a trial keeps the compiled network only when its step is at least this much faster


def choose_compile(config: Config, dist: Optional[DistInfo] = None) -> Config:
    """Settle ``compile`` for this run (after the network and memory layout are chosen): ``true``
    needs a working toolchain (ConfigError naming what is missing); ``auto`` stays ``auto`` -- a
    :class:`Trial` in the run -- where compiling was measured to pay (module docstring), else
    becomes false, and the reason is printed. Every rank decides alike (the same config and machine)."""
    tc = config.train
    device = resolve_device(device_for(dist or DistInfo(), tc.device))
    if tc.compile is True:
        problem = toolchain_problem(device)
        if problem:
            raise ConfigError(f"--compile cannot run here: {problem}; train without --compile")
        return config
    if tc.compile != "auto":
        return config
    plain = tc.task == "diffusion" and not config.latent.latent and not config.model.text_encoder
    why = None
    if not tc.max_minutes or tc.max_minutes < MIN_MINUTES:
        why = f"a compile pays only in a --max-minutes budget of >= {MIN_MINUTES:g}"
    elif config.model.network not in MEASURED_FASTER or not plain or device.type != "cpu":
        why = f"measured faster for plain pixel diffusion of {', '.join(MEASURED_FASTER)} on a CPU, not this run"
    else:
        why = toolchain_problem(device)
    if why:
        get_logger().info(f"compile auto: off ({why}; --compile forces it)")
        return config.override(compile=False)
    get_logger().info("compile auto: trial (steps timed eager, then compiled and checked: the faster trains; --no-compile skips it)")
    return config


class Trial:
    """``compile: auto``'s measurement inside a run: the durations of :data:`TIMED_STEPS` eager steps
    (after two warm-up steps), then -- once the compiled network is checked and trains -- of as many
    compiled steps (the step that compiled and the two after it are not timed), then one decision.
    A step's duration is the time from its start to the next step's start on the run's budget clock."""

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self.durations = {"eager": [], "compiled": []}
        self.last, self.mode = None, None  # the start of the step under way and what it is timed as
        self.switched = None  # the first step that started on the compiled network

    def start_step(self, step: int, compiled: bool) -> None:
        """Called at the start of every step: closes the previous step's timing, opens this one's."""
        now = self.clock()
        if self.mode is not None:
            self.durations[self.mode].append(now - self.last)
        if compiled:
            self.switched = step if self.switched is None else self.switched
            timed = step >= self.switched + 2 and len(self.durations["compiled"]) < TIMED_STEPS
            self.mode = "compiled" if timed else None
        else:
            self.mode = "eager" if step >= 2 else None
        self.last = now

    def untimed(self) -> None:
        """The step under way is not timed (the one that compiles)."""
        self.mode = None

    def eager_timed(self) -> bool:
        return len(self.durations["eager"]) >= TIMED_STEPS

    def done(self) -> bool:
        return len(self.durations["compiled"]) >= TIMED_STEPS

    def seconds(self) -> Tuple[float, float]:
        """The median eager and compiled step (the last :data:`TIMED_STEPS` eager ones)."""
        return tuple(float(torch.tensor(self.durations[k][-TIMED_STEPS:]).median()) for k in ("eager", "compiled"))


def before_step(trainer, data, plan, step: int) -> None:
    """From the trainer's step, before it trains: the compile check (:func:`check_in_step`) and,
    for ``compile: auto``, the :class:`Trial` that keeps whichever of eager and compiled is faster."""
    trial = trainer.compile_trial
    if trial is None and trainer.config.train.compile == "auto" and not trainer._compile_checked:
        trial = trainer.compile_trial = Trial(trainer.pacer.clock)
    if trial is not None:
        trial.start_step(step, compiled=trainer._compile_checked)
    if not trainer._compile_checked and (trial is None or trial.eager_timed()):
        if trial is not None:
            trial.untimed()
        check_in_step(trainer, data, plan, step)
        if trial is not None and trainer.compiled_net is None:
            trainer.compile_trial = None  # the check refused it: eager, and nothing more to time
    elif trial is not None and trial.done():
        eager, compiled = all_reduce_mean(torch.tensor(trial.seconds(), dtype=torch.float64), trainer.dist).tolist()
        keep = eager >= GAIN * compiled
        trainer.log.info(f"compile auto: compiled {compiled:.3f} s/step, eager {eager:.3f} s/step ({eager / compiled:.2f}x): "
                         f"training {'compiled' if keep else 'eagerly'}")
        trainer.compile_trial = None
        if not keep:
            trainer.compiled_net = None
            trainer.train_net = trainer._wrap_ddp(compiled=False)


__all__ = ["GAIN", "MEASURED_FASTER", "MIN_MINUTES", "NOT_YET", "TIMED_STEPS", "Trial", "before_step", "check_in_step",
           "choose_compile", "compile_network", "gradient_problem", "toolchain_problem"]
