"""Composition by analogy: a combination the captions never had, asked through three they had.

A 12-minute text model asked for a combination it never trained on ("a crack on wood" when every
crack it saw was on brushed steel) mostly draws what it saw on that surface (an inclusion): the
caption's defect word and the surface it always came with are one thing to it (README "Text
conditioning"; held-out defect type 0.53 over six default models, 0.14-0.91 by training seed).
The captions it had hold the answer in pieces: "a crack on brushed steel" (A), "a scratch on wood"
(B) and "a scratch on brushed steel" (C). If the caption's attributes act as independent experts,
p(x | d, m) ∝ f_d(x) g_m(x), every score is a sum s(d, m) = ∇log f_d + ∇log g_m, and

    s(crack, wood) = s(crack, steel) + s(scratch, wood) - s(scratch, steel)     (A + B - C)

exactly: the surface's part cancels from A - C, the defect's from B - C. So a prompt whose words no
training caption held together (:func:`difforge.pipeline.places.was_seen` says no) becomes the
composed prompt (:mod:`difforge.pipeline.compose`) ``A:1 AND B:1 AND C:-1``, averaged over the
closest such parallelograms of training captions, each at the prompt's place. Its weights sum to
one: no unconditional row is added, and guidance, the sampler and the interval work on it as on one
caption (u + s (analogy - u)). ``strength`` < 1 keeps that much of the prompt's own prediction:
``prompt:1-strength AND`` the analogy times ``strength``.

Which three: training captions ("templates", :func:`~difforge.pipeline.places.caption_templates`:
their place phrase replaced by a mark, stored in the model file) are word sets. A is "near" the
prompt when it lacks one or two of the prompt's words (those it *replaces*, R_A) and has others
instead (its *additions*); B likewise with replaced words disjoint from A's; C must be exactly the
prompt's words without R_A and R_B, with both additions -- a training caption. The closest ones
(fewest words changed, |R_A| + |R_B| + |additions|, and those changing :data:`COST_SLACK` more) are
averaged, at most :data:`MAX_PARALLELOGRAMS`, closest first: each parallelogram is an estimate
whose errors (the experts are not quite independent in a trained network) differ, and the average
of two kept the material better than the closest alone (measured, README). A combination with no
parallelogram (nothing to compose it from) and a composed prompt (the user's own mix) are left alone.

Measured on eight 12-minute default models of the text benchmark (README "Text conditioning";
defect / material / position of 100 held-out captions): 0.43 / 0.96 / 0.77 without, 0.84 / 0.89 / 0.83
with it, every model's defect type up (the lowest 0.08 -> 0.65). Each distinct caption is one more
network row per step (3 for one parallelogram, instead of 1): ~3x the time of a plain prompt.
"""

from __future__ import annotations

from itertools import combinations
from typing import Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

from .compose import Part
from .places import PLACE_MARK, combination, find_place

MAX_PARALLELOGRAMS = 4
"""At most this many of the closest parallelograms are averaged, closest first (each may add three network rows)."""
MAX_REPLACED = 2
"""A near caption replaces at most this many of the prompt's words."""
COST_SLACK = 1
"""Parallelograms that change up to this many words more than the closest one are averaged too."""
MAX_NEAR = 64
"""Near captions kept per set of replaced words (the fewest additions first)."""
MAX_PAIRED = 256
"""Near captions paired at most (the fewest words changed first): bounds the pairs tried per prompt (~30,000)."""


def at_place(template: str, phrase: str) -> str:
    """``template`` with its place mark replaced by ``phrase`` ("" removes it), spaces closed up."""
    return " ".join(template.replace(PLACE_MARK, phrase).split())


class Analogies:
    """The parallelograms of one model's training captions (``templates``; None: no list, no analogy)."""

    def __init__(self, templates: Optional[Sequence[str]]):
        self.by_words: Dict[FrozenSet[str], str] = {}
        for t in sorted(templates or ()):
            self.by_words.setdefault(combination(t), t)
        self.enabled = templates is not None

    def seen(self, words: FrozenSet[str]) -> bool:
        return any(words <= s for s in self.by_words)

    def was_seen(self, text: str) -> bool:
        """:func:`~difforge.pipeline.places.was_seen`'s rule on these templates: some caption held every word of
        ``text`` outside its place."""
        return self.seen(combination(text))

    def parallelograms(self, words: FrozenSet[str]) -> List[Tuple[str, str, str]]:
        """(A, B, C) templates of the closest parallelograms for the prompt's ``words`` (none when seen)."""
        if not self.enabled or not words or self.seen(words):
            return []
        groups: Dict[FrozenSet[str], list] = {}
        for s, t in self.by_words.items():
            replaced = words - s
            if 0 < len(replaced) <= MAX_REPLACED:
                groups.setdefault(frozenset(replaced), []).append((len(replaced) + len(s - words), t, replaced, s - words))
        near = sorted(item for group in groups.values() for item in sorted(group)[:MAX_NEAR])[:MAX_PAIRED]
        found = []
        for (_, ta, ra, aa), (_, tb, rb, ab) in combinations(near, 2):
            if ra & rb:
                continue
            tc = self.by_words.get((words - ra - rb) | aa | ab)
            if tc is not None:
                found.append((len(ra) + len(rb) + len(aa | ab), *sorted((ta, tb)), tc))
        if not found:
            return []
        closest = min(f[0] for f in found)
        return [f[1:] for f in sorted(set(found)) if f[0] <= closest + COST_SLACK][:MAX_PARALLELOGRAMS]

    def parts(self, parts: List[Part], strength: float = 1.0, known: Callable[[str], bool] = lambda _text: True) -> List[Part]:
        """``parts`` of one prompt with an unseen combination composed by analogy (module docstring);
        unchanged for ``strength`` 0, a composed prompt, a seen combination, no parallelogram, or a
        composed caption that ``known`` refuses."""
        if strength == 0 or len(parts) != 1 or parts[0][1] != 1.0:
            return parts
        text = parts[0][0]
        chosen = self.parallelograms(combination(text))
        if not chosen:
            return parts
        place = find_place(text)
        phrase = place.group(0) if place else ""
        weights: Dict[str, float] = {text: 1.0 - strength} if strength != 1.0 else {}
        for a, b, c in chosen:
            for template, sign in ((a, 1.0), (b, 1.0), (c, -1.0)):
                key = at_place(template, phrase)
                weights[key] = weights.get(key, 0.0) + sign * strength / len(chosen)
        out = [(t, w) for t, w in weights.items() if abs(w) > 1e-12]  # a caption two parallelograms add and subtract: no row
        return out if all(known(t) for t, _ in out) else parts


__all__ = ["Analogies", "COST_SLACK", "MAX_NEAR", "MAX_PAIRED", "MAX_PARALLELOGRAMS", "MAX_REPLACED", "at_place"]
