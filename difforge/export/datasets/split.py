"""Train / val / test splits: ``--split train=0.8,val=0.2`` parsed, and images assigned to them.

Assignment is stratified by (source, class), so every class has real and synthetic images in each
split in the asked proportions, and deterministic for a seed: within a group the images are
shuffled by ``numpy.random.default_rng([seed, group])`` and cut at counts rounded by largest
remainder (the counts sum to the group's size; ties go to the split named first).
"""

from __future__ import annotations

import math
import zlib
from typing import Dict, List, Sequence

import numpy as np

from ...errors import ConfigError

SPLITS = ("train", "val", "test")


def parse_split(text: str) -> Dict[str, float]:
    """``"train=0.8,val=0.2"`` -> ``{"train": 0.8, "val": 0.2}`` (fractions normalised to sum 1)."""
    out: Dict[str, float] = {}
    for part in (p.strip() for p in str(text).split(",") if p.strip()):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in SPLITS:
            raise ConfigError(f"--split: {part!r} is not NAME=FRACTION with NAME one of {', '.join(SPLITS)} (e.g. train=0.8,val=0.2)")
        if name in out:
            raise ConfigError(f"--split names {name} twice")
        try:
            v = float(value)
        except ValueError:
            raise ConfigError(f"--split: {value!r} for {name} is not a number") from None
        if not math.isfinite(v) or v < 0:
            raise ConfigError(f"--split: the fraction for {name} must be a number >= 0, got {value}")
        out[name] = v
    total = sum(out.values())
    if total <= 0:
        raise ConfigError(f"--split {text!r} gives no image to any split; e.g. train=0.8,val=0.2")
    return {k: v / total for k, v in out.items() if v > 0}


def counts(n: int, fractions: Dict[str, float]) -> Dict[str, int]:
    """Split sizes for ``n`` images: floors of n * fraction, the rest by largest remainder."""
    raw = {k: n * f for k, f in fractions.items()}
    out = {k: int(math.floor(v)) for k, v in raw.items()}
    order = sorted(raw, key=lambda k: (-(raw[k] - out[k]), list(raw).index(k)))
    for k in order[: n - sum(out.values())]:
        out[k] += 1
    return out


def assign(groups: Sequence[str], fractions: Dict[str, float], seed: int) -> List[str]:
    """The split of each item, ``groups[i]`` being item i's stratum (e.g. ``"real/scratch"``)."""
    result = [""] * len(groups)
    by_group: Dict[str, List[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    for g, idx in by_group.items():
        rng = np.random.default_rng([int(seed), zlib.crc32(g.encode("utf-8"))])
        order = [idx[j] for j in rng.permutation(len(idx))]
        start = 0
        for name, k in counts(len(idx), fractions).items():
            for i in order[start : start + k]:
                result[i] = name
            start += k
    return result


__all__ = ["SPLITS", "assign", "counts", "parse_split"]
