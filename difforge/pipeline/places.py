"""Place contrast: a prompt that names a place is also steered away from the places beside it.

A 12-minute text model puts a seen caption's defect in the right cell of the 3 x 3 grid most of the
time, and misses by a pixel or two: the defect lands just over the edge of the asked cell, or the
model hedges with two faint defects either side of it (README "Text conditioning"). Guidance says
"more like the caption than like no caption"; it does not say "here rather than next door". With
the prompt's place p and its neighbours N(p) in the grid (3 for a corner, 5 for an edge, 8 for the
centre), the request becomes the composed prompt (:mod:`difforge.pipeline.compose`)

    prompt : 1 + a   AND   prompt with p -> q : -a / |N(p)|   for each q in N(p)

so that, with guidance scale s and the unconditional prediction u, the step follows

    u + s (out(prompt) - u) + s a (out(prompt) - mean_q out(prompt at q)):

the usual guided prediction plus a times the direction that separates the asked place from its
neighbours, the rest of the caption held fixed. The contrast is a different caption, not a
different network, so every sampler, the guidance interval and composed prompts work unchanged.
Each neighbour is one more network row per step (a corner's request: 4 rows instead of 1).

Only for a combination the captions had (one they never had is composed by analogy instead,
:mod:`difforge.pipeline.analogy`): sharpening the place costs some of what the rest of the
caption asks for, which a caption the model learnt has to spare and a combination it never saw
does not (measured on six models: seen position 0.845 -> 0.92 and seen defect type 0.985 -> 0.94,
but the defect type of held-out combinations 0.53 -> 0.41; pipeline/config.py PLACE_CONTRAST,
README "Text conditioning"). A model file lists its distinct training captions with their place
phrase replaced by a mark (:func:`caption_templates`, ``meta["text"]["templates"]``; files of
before listed their word sets, ``"combinations"``, which :func:`was_seen` reads too); a prompt gets
the contrast when some training caption held every word it has outside its place. A file without
either list (made before them, or from over :data:`MAX_COMBINATIONS` distinct captions) contrasts
every placed prompt.

Places are the built-in captions' phrases (:func:`difforge.data.builtin_captions.place_phrase`:
"at the top left", "in the centre", ...), which a user's own captions can use too. A prompt
without one, a composed prompt (the user's own mix) and a prompt whose neighbour captions hold a
word the model never saw are left as they are.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, List, Optional, Sequence

from ..data.builtin_captions import POSITIONS, place_phrase
from ..models.text_encoder import words
from .compose import Part

MAX_COMBINATIONS = 20_000
"""More distinct training captions than this: the model file lists none (every placed prompt is contrasted)."""
PLACE_MARK = "{place}"
"""Where a caption template's place phrase was."""

# longest first: "at the top left" is not "at the top" followed by "left"
_PHRASES = sorted(((place_phrase(p), p) for p in POSITIONS), key=lambda pair: -len(pair[0]))
_FIND = re.compile(r"(?<!\w)(" + "|".join(re.escape(text) for text, _ in _PHRASES) + r")(?!\w)")
_PLACE_OF = dict(_PHRASES)


def neighbours(place: str) -> List[str]:
    """The places next to ``place`` in the 3 x 3 grid (diagonals included), in grid order."""
    row, col = divmod(POSITIONS.index(place), 3)
    return [POSITIONS[3 * r + c] for r in range(3) for c in range(3)
            if (r, c) != (row, col) and abs(r - row) <= 1 and abs(c - col) <= 1]


def find_place(prompt: str) -> Optional[re.Match]:
    """The prompt's one place phrase, or None when it names none or several."""
    found = list(_FIND.finditer(prompt))
    return found[0] if len(found) == 1 else None


def combination(text: str) -> frozenset:
    """The words of ``text`` (a caption or a template) outside its place phrases: what it asks for apart from where."""
    return frozenset(words(_FIND.sub(" ", text.replace(PLACE_MARK, " "))))


def caption_templates(captions: Iterable[str]) -> Optional[List[str]]:
    """The distinct training ``captions`` with their one place phrase replaced by :data:`PLACE_MARK`
    (a caption naming none or several stays as it is), sorted: a model file's ``meta["text"]["templates"]``;
    None for over :data:`MAX_COMBINATIONS`."""
    found = set()
    for c in captions:
        match = find_place(c)
        found.add(" ".join(c.split()) if match is None else c[:match.start()] + PLACE_MARK + c[match.end():])
        if len(found) > MAX_COMBINATIONS:
            return None
    return sorted(found)


def was_seen(combinations: Optional[Sequence[str]]) -> Callable[[str], bool]:
    """``prompt -> bool``: some training caption held every word of the prompt outside its place (always
    True without the list). ``combinations``: templates (:func:`caption_templates`) or the word sets of older files."""
    if combinations is None:
        return lambda _text: True
    sets = list({combination(c) for c in combinations})
    return lambda text: any(combination(text) <= s for s in sets)


def contrast_parts(parts: List[Part], amount: float, known: Callable[[str], bool] = lambda _text: True,
                   seen: Callable[[str], bool] = lambda _text: True) -> List[Part]:
    """``parts`` of one prompt (:func:`~difforge.pipeline.compose.prompt_parts`) with the place contrast
    of strength ``amount`` (see the module docstring); unchanged for ``amount`` 0, a composed prompt,
    a prompt that names no place (or several), a combination that ``seen`` refuses, or a neighbour
    caption that ``known`` refuses."""
    if amount == 0 or len(parts) != 1 or parts[0][1] != 1.0:
        return parts
    text = parts[0][0]
    match = find_place(text)
    if match is None or not seen(text):
        return parts
    others = [text[:match.start()] + place_phrase(q) + text[match.end():] for q in neighbours(_PLACE_OF[match.group(0)])]
    if not all(known(t) for t in others):
        return parts
    return [(text, 1.0 + amount)] + [(t, -amount / len(others)) for t in others]


__all__ = ["MAX_COMBINATIONS", "PLACE_MARK", "caption_templates", "combination", "contrast_parts", "find_place", "neighbours",
           "was_seen"]
