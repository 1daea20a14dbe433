"""Which timesteps a sampler visits: respacing strings, step spacings and sigma <-> t conversion.

A sampler receives a descending list of *original* timestep indices (the network keeps seeing the
indices it was trained on). Integer lists come from improved-diffusion's respacing strings or an
even grid; the log-SNR and Karras spacings give fractional indices, which the denoiser serves by
interpolating log(sigma) between table entries (:func:`~difforge.diffusion.schedule.alpha_bar_at`).

Throughout, sigma = sqrt((1 - ab) / ab) is the noise level of the variance-exploding view
x_t / sqrt(ab) = x_0 + sigma eps (Karras et al. 2022), and log-SNR = -2 log(sigma). The
conversions themselves (``alpha_bars``, ``sigmas``, ``sigma_to_t``) live in
:mod:`~difforge.diffusion.schedule` and are re-exported here.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch

from .samplers import sampler_spec
from .schedule import Schedule, alpha_bars, sigma_to_t, sigmas  # noqa: F401  (alpha_bars: re-exported)

SPACINGS = ("uniform", "logsnr", "karras")


def default_spacing(sampler_name: str) -> str:
    """The spacing that works best for ``sampler_name``, as the sampler declares it at registration.

    Ancestral, DDIM and PLMS steps are built for (near) uniform steps in t; the exponential
    integrators (DPM-Solver++, UniPC) step in log-SNR; the EDM samplers were tuned with Karras'
    rho=7 (measured in ``benchmarks/samplers.py``). ``uniform`` for an unknown name.
    """
    spec = sampler_spec(sampler_name)
    return "uniform" if spec is None else spec.spacing


def space_timesteps(num_steps: int, spec: Union[str, int]) -> list:
    """Improved-diffusion's respacing: the sorted original timesteps to keep out of ``num_steps``.

    - ``"250"`` or ``250``: 250 steps evenly strided over [0, T).
    - ``"10,15,20"``: split [0, T) into 3 equal sections (the first T % 3 one longer) and take
      10, 15, 20 steps evenly strided within each, always including each section's first step.
    - ``"ddim50"``: the integer stride k giving exactly 50 steps ``range(0, T, k)`` (DDIM's
      convention); a ValueError if no integer stride gives exactly that many.
    """
    if num_steps < 1:
        raise ValueError(f"diffusion steps must be >= 1, got {num_steps}")
    text = str(spec).strip().replace(" ", "")
    if text.startswith("ddim"):
        count = _parse_count(text[4:], spec)
        for stride in range(1, num_steps + 1):
            if len(range(0, num_steps, stride)) == count:
                return list(range(0, num_steps, stride))
        raise ValueError(
            f"respacing {spec!r}: no integer stride gives exactly {count} steps out of {num_steps}; "
            f"use a plain count such as '{count}' instead"
        )
    counts = [_parse_count(part, spec, allow_zero=True) for part in text.split(",")]
    if sum(counts) < 1:
        raise ValueError(f"respacing {spec!r} keeps no timestep; give at least one positive count")
    size, extra = divmod(num_steps, len(counts))
    kept, start = [], 0
    for i, count in enumerate(counts):
        section = size + (1 if i < extra else 0)
        if count > section:
            raise ValueError(
                f"respacing {spec!r}: section {i} has {section} timesteps, cannot take {count} "
                f"(at most {num_steps} steps in all)"
            )
        stride = 1.0 if count <= 1 else (section - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            kept.append(start + round(cur))
            cur += stride
        start += section
    return sorted(set(kept))


def _parse_count(text: str, spec, allow_zero: bool = False) -> int:
    if not text.isdigit():
        raise ValueError(
            f"bad respacing {spec!r}: expected a step count ('50'), comma-separated counts per "
            f"section ('10,15,20') or 'ddimN' ('ddim50')"
        )
    count = int(text)
    if count < (0 if allow_zero else 1):
        raise ValueError(f"bad respacing {spec!r}: step counts must be positive")
    return count


def sampling_timesteps(
    num_steps: int,
    steps: Optional[Union[int, str]],
    spacing: str = "uniform",
    schedule: Optional[Schedule] = None,
    *,
    rho: float = 7.0,
) -> list:
    """Turn ``--steps`` into the descending timestep list a sampler takes.

    Args:
        num_steps: T, the training schedule's length.
        steps: how many sampler steps (denoiser evaluations for one-evaluation-per-step
            samplers), or an improved-diffusion respacing string (``"ddim50"``, ``"10,15,20"``),
            which then decides the steps by itself (``spacing`` is ignored).
        spacing:
            - ``"uniform"``: ``steps`` integers evenly spread over [0, T-1], both ends included
              (rounded half up), e.g. T=1000, 5 -> [999, 749, 500, 250, 0].
            - ``"logsnr"``: uniform in log-SNR between t=T-1 and t=0 (fractional t; needs ``schedule``).
            - ``"karras"``: sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho
              with smax, smin the schedule's sigma at T-1 and 0 (fractional t; needs ``schedule``).
            - a respacing string (see :func:`space_timesteps`); ``steps`` must then be None or
              equal to the number of steps it keeps.
        schedule: the training schedule (required for ``logsnr`` and ``karras``).
        rho: Karras' rho.

    Returns a list of ints (uniform, respacing) or floats (logsnr, karras), starting at T-1
    (respacing: its largest kept step) and ending at 0.
    """
    if isinstance(steps, str) and not steps.strip().isdigit():
        return space_timesteps(num_steps, steps)[::-1]  # a respacing string decides by itself
    if spacing not in SPACINGS:
        kept = space_timesteps(num_steps, spacing)
        if steps is not None and int(steps) != len(kept):
            raise ValueError(f"spacing {spacing!r} keeps {len(kept)} steps but steps={steps} was asked")
        return kept[::-1]
    if steps is None:
        raise ValueError(f"spacing {spacing!r} needs a number of steps")
    steps = int(steps)
    if not 1 <= steps <= num_steps:
        raise ValueError(f"steps must be in [1, {num_steps}] (the schedule's length), got {steps}")
    if steps == 1:
        return [num_steps - 1]
    if spacing == "uniform":
        last = num_steps - 1
        return [int(math.floor(last * (steps - 1 - i) / (steps - 1) + 0.5)) for i in range(steps)]
    if schedule is None:
        raise ValueError(f"spacing {spacing!r} needs the schedule (pass schedule=...)")
    if schedule.num_steps != num_steps:
        raise ValueError(f"schedule has {schedule.num_steps} steps but num_steps={num_steps}")
    return sigma_spaced(schedule, num_steps - 1, steps, spacing, rho)


def sigma_spaced(schedule: Schedule, t_max: int, steps: int, spacing: str, rho: float = 7.0) -> list:
    """``steps`` >= 2 fractional timesteps from ``t_max`` down to 0, spaced in sigma.

    ``logsnr``: uniform in log(sigma); ``karras``: sigma_i = (smax^(1/rho) + i/(n-1)
    (smin^(1/rho) - smax^(1/rho)))^rho, with smax, smin the sigmas at ``t_max`` and 0.

    A schedule whose last step jumps in noise level (the cosine schedule clips its last betas at
    0.999: log-SNR -12.9 at T-2, -19.8 at T-1) would spend several of these steps inside that one
    training step, where the image is pure noise either way. So when sigma grows by more than
    e^0.5 over the last step, the spacing runs from ``t_max - 1`` and only the first point is
    moved up to ``t_max`` (sampling still starts from pure noise). Measured on the exact
    Gaussian-mixture denoiser (benchmarks/samplers.py --schedule cosine), Frechet distance x1000
    at 20 steps: dpm++2m 2.03 -> 0.72, unipc 0.62 -> 0.18; the linear schedule is unchanged.
    """
    smax, smin = sigmas(schedule, [t_max, 0])
    if t_max >= 2:
        below = float(sigmas(schedule, [t_max - 1])[0])
        if math.log(smax) - math.log(below) > 0.5:
            smax = below
    frac = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    if spacing == "logsnr":
        sig = torch.exp(math.log(smax) + frac * (math.log(smin) - math.log(smax)))
    else:
        lo, hi = smin ** (1.0 / rho), smax ** (1.0 / rho)
        sig = (hi + frac * (lo - hi)) ** rho
    ts = sigma_to_t(schedule, sig).tolist()
    ts[0], ts[-1] = float(t_max), 0.0  # exact ends, no round-off
    return ts


__all__ = [
    "SPACINGS",
    "alpha_bars",
    "default_spacing",
    "sampling_timesteps",
    "sigma_spaced",
    "sigma_to_t",
    "sigmas",
    "space_timesteps",
]
