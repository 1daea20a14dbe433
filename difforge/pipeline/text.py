"""Prompts: text requests through the one batch core, CFG included, without a second code path.

A text request becomes a *prompt view* of the pipeline (:func:`with_prompts`): a table of rows
(class, prompt) for the request, plus a last row (null class, negative prompt, "" by default).
The labels the batch core slices are row indices, and the view's network looks each row's class
and text context up, so the Denoiser's classifier-free guidance works unchanged: its null
"class" is the last row, and conditional and unconditional halves still run as one batched
forward. The text is encoded once per request: the built-in encoder's token ids (the network
encodes them) or a frozen CLIP's embeddings (cached per caption by
:class:`~difforge.models.clip_text.ClipText`).

A composed prompt ("A AND B :w", :mod:`difforge.pipeline.compose`) makes its row a weighted mix
of several (class, text) entries of the table; the view's network returns the mix, so guidance,
samplers and every mode see one prediction per row as for a plain prompt.

``num`` images per prompt, prompt by prompt; with several prompts the view's class names are
``p0``, ``p1``, ... (``scratch_p0`` ... with classes), so output files and grids are per prompt.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence, Union

import torch

from ..errors import UserError
from .analogy import Analogies
from .compose import mixing_rows, prompt_parts
from .places import contrast_parts, was_seen

Prompts = Union[None, str, Sequence[str]]


class BuiltinText:
    """The built-in encoder's tokenizer: prompts -> token ids (the network owns the encoder)."""

    def __init__(self, link: Dict[str, Any]):
        from ..models.text_encoder import WordTokenizer

        self.tokenizer = WordTokenizer(link["vocab"], int(link["max_length"]))

    def encode(self, texts: Sequence[str]):
        unknown = sorted({w for t in texts for w in self.tokenizer.unknown(t)})
        if unknown:
            known = ", ".join(self.tokenizer.vocab[3:43])
            raise UserError(f"the model's text encoder never saw the word(s) {', '.join(unknown[:10])} in its captions; "
                            f"use its words: {known}{' ...' if len(self.tokenizer.vocab) > 43 else ''}")
        return self.tokenizer.encode(texts), None

    def knows(self, text: str) -> bool:
        """True when every word of ``text`` is in the vocabulary (:meth:`encode` refuses the others)."""
        return not self.tokenizer.unknown(text)


def load_text(meta: Dict[str, Any], source: str = "", override=None, device: str = "cpu"):
    """The text side of a model file (``meta["text"]``): :class:`BuiltinText` or a hash-checked
    :class:`~difforge.models.clip_text.ClipText`; None for a model without text."""
    link = meta.get("text")
    if not link:
        return None
    if link.get("encoder") == "builtin":
        return BuiltinText(link)
    from ..models.clip_text import load_linked

    return load_linked(link, source, override=override, device=device)


class PromptTable:
    """``net(x, t, rows)`` -> the network with each row's class and text context (see the module docstring).

    ``weights`` (rows + 1, entries), for composed prompts (:mod:`difforge.pipeline.compose`): row r's
    output is the weighted sum of the entries' outputs (context / classes are then per entry);
    None: row r is entry r, one forward as before."""

    def __init__(self, net, classes: Optional[torch.Tensor], context: torch.Tensor, mask: Optional[torch.Tensor],
                 weights: Optional[torch.Tensor] = None):
        self.net, self.classes, self.context, self.mask, self.weights = net, classes, context, mask, weights
        self.count = (int(context.shape[0]) if weights is None else int(weights.shape[0])) - 1  # the last row is the unconditional one

    def _entries(self, x, t, entries, **kw):
        labels = None if self.classes is None else self.classes[entries].to(x.device)
        mask = None if self.mask is None else self.mask[entries].to(x.device)
        return self.net(x, t, labels, context=self.context[entries].to(x.device), context_mask=mask, **kw)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor] = None, **kw) -> torch.Tensor:
        rows = (y if y is not None else torch.full((x.shape[0],), self.count, dtype=torch.long)).cpu()
        if self.weights is None:
            return self._entries(x, t, rows, **kw)
        w = self.weights[rows]
        sample, entry = w.nonzero(as_tuple=True)  # every (image, entry) pair its row needs: one batched forward
        at = sample.to(x.device)
        kw = {k: v[at] if torch.is_tensor(v) and v.shape[:1] == x.shape[:1] else v for k, v in kw.items()}
        out = self._entries(x[at], t[at], entry, **kw)
        scale = w[sample, entry].to(device=x.device, dtype=out.dtype).reshape(-1, *[1] * (out.ndim - 1))
        return torch.zeros((x.shape[0], *out.shape[1:]), dtype=out.dtype, device=x.device).index_add_(0, at, out * scale)


def prompt_list(prompt: Prompts) -> Optional[List[str]]:
    if prompt is None:
        return None
    items = [prompt] if isinstance(prompt, str) else list(prompt)
    if not items or not all(isinstance(p, str) for p in items):
        raise UserError(f"prompt must be a text or a non-empty list of texts, got {prompt!r}")
    return items


def with_prompts(pipe, prompt: Prompts, negative_prompt: Optional[str], num: int, class_label,
                 place_contrast: Union[float, str, None] = "auto", analogy: Union[float, str, None] = "auto") -> Any:
    """``pipe`` unchanged for a model without text and no prompt; else its prompt view for a request
    of ``num`` images per prompt (and per class with ``class_label="all"``). ``place_contrast``: the
    strength a of :mod:`difforge.pipeline.places` for prompts that name a place ("auto" or None:
    :data:`~difforge.pipeline.config.PLACE_CONTRAST`; 0: off); ``analogy``: the strength of
    :mod:`difforge.pipeline.analogy` for combinations the captions never had (auto: ANALOGY; 0: off)."""
    prompts = prompt_list(prompt)
    has_text = bool(pipe.meta.get("text"))
    if not has_text:
        if prompts is not None or negative_prompt is not None or place_contrast not in ("auto", None) or analogy not in ("auto", None):
            raise UserError(f"{pipe.source or 'this model'} has no text encoder (it was trained without --text-encoder); "
                            f"leave out --prompt/--negative-prompt/--place-contrast/--analogy, or train with --text-encoder builtin")
        return pipe
    if pipe.guide is not None:
        raise UserError("prompts do not combine with --classifier / --uncond-model guidance; leave one out")
    prompts = prompts or [""]
    base = pipe.labels_for(num, class_label)  # the class of every image of one prompt (None: no classes)
    rows: Dict[tuple, int] = {}
    y = []
    for p in range(len(prompts)):
        for i in range(num if base is None else len(base)):
            key = (None if base is None else int(base[i]), p)
            y.append(rows.setdefault(key, len(rows)))
    keys = list(rows)
    tag = (lambda c, p: f"p{p}") if base is None else (lambda c, p: f"{pipe.class_names[c]}_p{p}")
    names = [tag(c, p) for c, p in keys] if len(prompts) > 1 or base is not None else ["prompt"]
    view, rows_y = rows_view(pipe, [prompts[p] for _, p in keys], None if base is None else [c for c, _ in keys], negative_prompt,
                             names, torch.tensor(y, dtype=torch.long), place_contrast=check_place_contrast(place_contrast),
                             analogy=check_analogy(analogy))
    view.prompt_texts = prompts
    return view


def check_place_contrast(value: Union[float, str, None]) -> float:
    """The place contrast a request asked for as a number >= 0 ("auto" / None: the measured default)."""
    from .config import PLACE_CONTRAST

    if value in ("auto", None):
        return PLACE_CONTRAST
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < float("inf"):
        raise UserError(f"place_contrast (--place-contrast) must be a number >= 0 (0: off) or auto, got {value!r}")
    return float(value)


def check_analogy(value: Union[float, str, None]) -> float:
    """The analogy strength a request asked for, in [0, 1] ("auto" / None: the measured default,
    :data:`~difforge.pipeline.config.ANALOGY`)."""
    from .config import ANALOGY

    if value in ("auto", None):
        return ANALOGY
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise UserError(f"analogy (--analogy) must be a number from 0 (off) to 1 (the default) or auto, got {value!r}")
    return float(value)


def rows_view(pipe, texts: Sequence[str], classes: Optional[Sequence[int]], negative_prompt: Optional[str] = None,
              names: Optional[List[str]] = None, y: Optional[torch.Tensor] = None, place_contrast: float = 0.0,
              analogy: float = 0.0):
    """(prompt view, row labels) with one row per (text, class) given; ``y`` the labels its
    ``labels_for`` returns (default: every row once); ``place_contrast`` > 0 steers a prompt that names
    a place away from its neighbours (:mod:`difforge.pipeline.places`), ``analogy`` > 0 composes a
    combination the captions never had from ones they had (:mod:`difforge.pipeline.analogy`). The
    trainer's previews use it directly."""
    if pipe.text is None:
        pipe.text = load_text(pipe.meta, pipe.source, device=str(pipe.device))
    n_classes = len(pipe.meta["data"].get("class_names") or [])
    neg = negative_prompt if negative_prompt is not None else ""
    n_rows, weights = len(texts), None
    entry_classes = list(classes) if classes is not None else [None] * n_rows
    listed = pipe.meta["text"].get("templates")
    known = getattr(pipe.text, "knows", lambda _text: True)
    analogies = Analogies(listed)  # the templates' word sets, computed once for both rules
    seen = analogies.was_seen if listed is not None else was_seen(pipe.meta["text"].get("combinations"))
    parts = [analogies.parts(contrast_parts(prompt_parts(t), place_contrast, known, seen), analogy, known) for t in texts]
    if any(p != [(t, 1.0)] for p, t in zip(parts, texts)):  # a composed prompt: rows mix entries
        texts, entry_classes, weights = mixing_rows(parts, entry_classes)
    context, mask = pipe.text.encode(list(texts) + [neg])
    table = None if classes is None else torch.tensor(list(entry_classes) + [n_classes], dtype=torch.long)
    view = copy.copy(pipe)
    view.prompts = PromptTable(pipe.net, table, context, mask, weights)
    view.class_names = names or [f"row{i}" for i in range(n_rows)]
    rows = torch.arange(n_rows) if y is None else y
    view.labels_for = lambda _num, _class_label: rows
    return view, rows


__all__ = ["BuiltinText", "PromptTable", "check_analogy", "check_place_contrast", "load_text", "prompt_list", "rows_view", "with_prompts"]
