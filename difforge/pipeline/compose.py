"""Composed prompts: ``"a small at the top AND crack AND on wood"``.

A caption model learns the combinations its captions had. To ask for one it never saw, a user
can compose it from parts it did see (Liu et al. 2022, "Compositional Visual Generation with
Composable Diffusion Models"): with parts c_i of weights w_i the network's prediction for the
request is

    out = u + sum_i w_i (out(c_i) - u),     u = out(negative prompt or "")

and classifier-free guidance then scales the whole difference as for one prompt. Under a
product-of-experts reading, p(x | c) proportional to p(x) prod_i (p(c_i | x))^w_i: each part pulls
towards what it says, and a part of negative weight takes away what it says. The network's
output is affine in eps, x0 and v alike (for a fixed x_t), and the weights of ``out(c_i)`` and
``u`` sum to one, so combining raw outputs is the same as combining any parametrisation's.

Measured (benchmarks/text_conditioning.py --compose, README): a defect never trained on a
material, asked as the rest of its caption AND the defect word AND the surface, came out right
71% of the time against 33% for the plain caption with one trained model, and no better (0.25
against 0.26) with a second training seed's; an analogy (crack on steel AND scratch on wood AND
scratch on steel :-1) did not help.

Syntax (the Stable Diffusion web UI's): parts joined by ``AND`` in capitals, a word of its own;
each part may end in ``:weight`` (default 1). A prompt without ``AND`` is one plain part,
unchanged, whatever colons it holds.
"""

from __future__ import annotations

import math
import re
from typing import List, Sequence, Tuple

import torch

from ..errors import UserError

SEPARATOR = re.compile(r"(?<!\S)AND(?!\S)")  # AND as a word of its own
WEIGHT = re.compile(r"^(?P<text>.*?)\s*:\s*(?P<w>[+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*$", re.S)

Part = Tuple[str, float]


def prompt_parts(prompt: str) -> List[Part]:
    """``[(text, weight), ...]`` of one prompt: one part of weight 1 unless it holds `` AND ``."""
    pieces = SEPARATOR.split(prompt)
    if len(pieces) == 1:
        return [(prompt, 1.0)]
    parts = []
    for piece in (p.strip() for p in pieces):
        m = WEIGHT.match(piece)
        text, weight = (m["text"].strip(), float(m["w"])) if m else (piece, 1.0)
        if not text:
            raise UserError(f"an empty part in the composed prompt {prompt!r}: every part joined by AND needs words "
                            f"(e.g. 'a small at the top AND crack AND on wood :0.8')")
        parts.append((text, weight))
    return parts


def mixing_rows(parts_per_row: Sequence[Sequence[Part]], classes: Sequence) -> Tuple[list, list, torch.Tensor]:
    """The network entries a request needs and how each requested row mixes them.

    Returns (texts, classes, weights): one entry per distinct (class, text) part, to which the
    caller appends the null entry (the unconditional row: null class, negative prompt);
    ``weights`` is (rows + 1, entries + 1): row r is ``sum_i w_i e_i + (1 - sum_i w_i) e_null``
    and the last row is the null entry alone (the Denoiser's unconditional label)."""
    index = {}
    for parts, c in zip(parts_per_row, classes):
        for text, _ in parts:
            index.setdefault((c, text), len(index))
    null = len(index)
    weights = torch.zeros(len(parts_per_row) + 1, null + 1, dtype=torch.float64)
    for r, (parts, c) in enumerate(zip(parts_per_row, classes)):
        for text, w in parts:
            weights[r, index[(c, text)]] += w
        rest = 1.0 - math.fsum(w for _, w in parts)
        weights[r, null] += rest if abs(rest) > 1e-12 else 0.0  # parts that sum to one (a place contrast) need no null row
    weights[-1, null] = 1.0
    return [t for _, t in index], [c for c, _ in index], weights


__all__ = ["SEPARATOR", "mixing_rows", "prompt_parts"]
