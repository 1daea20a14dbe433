"""Stop a diverging run before it spoils its files: non-finite loss, gradients or weights.

A NaN or an infinity in the loss or the gradients at step k means the optimizer step would write
NaN into the weights and, through the EMA, into every later model file. The trainer asks these
guards before the optimizer step and before each save; a failed guard raises
:class:`TrainingDiverged` (a ``FloatingPointError``: the CLI prints one line and exits 3) and the
files already on disk, the last good checkpoint, are kept as they are.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Iterable, Optional

import torch

ADVICE = "lower --lr, set --grad-clip (e.g. 1.0) or use --precision fp32"


class TrainingDiverged(FloatingPointError):
    """The loss, a gradient or a weight became NaN or infinite; nothing was saved after it."""


def kept(checkpoints: Optional[Path]) -> str:
    """Which checkpoint is left on disk (read from the state file's header), for the message."""
    if checkpoints is None:
        return "no checkpoint was written"
    state = Path(checkpoints) / "state.safetensors"
    if not state.exists():
        return "no checkpoint had been written yet"
    try:
        from ..modelfile import read_metadata

        step = read_metadata(state)["loop"]["step"]
    except Exception:  # the message matters more than the step number
        step = "?"
    return f"the last good checkpoint (step {step}) in {checkpoints} is kept; resume it with --resume after changing a setting"


def check_loss(loss: float, step: int, checkpoints: Optional[Path] = None) -> None:
    if not math.isfinite(loss):
        raise TrainingDiverged(f"training stopped: the loss became {loss} at step {step + 1}; {ADVICE}; {kept(checkpoints)}")


def check_grads(params: Iterable[torch.Tensor], step: int, checkpoints: Optional[Path] = None) -> Optional[float]:
    """The total gradient norm; TrainingDiverged when a gradient is NaN or infinite (one host sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return None
    norm = float(torch.nn.utils.get_total_norm(grads, foreach=True))
    if not math.isfinite(norm):
        raise TrainingDiverged(f"training stopped: a gradient became {norm} at step {step + 1}; {ADVICE}; {kept(checkpoints)}")
    return norm


def check_weights(step: int, checkpoints: Optional[Path], *states: Dict[str, torch.Tensor]) -> None:
    """Before a save: TrainingDiverged when a weight of any of ``states`` is NaN or infinite (so no such file is written)."""
    bad = [k for sd in states for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise TrainingDiverged(
            f"training stopped: {len(bad)} weight tensors (e.g. {bad[0]}) became NaN/Inf by step {step}; {ADVICE}; {kept(checkpoints)}"
        )


__all__ = ["TrainingDiverged", "check_grads", "check_loss", "check_weights"]
