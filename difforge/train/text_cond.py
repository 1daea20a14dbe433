"""Text conditioning of a diffusion run: captions -> what the network's cross-attention sees.

``model.text_encoder``:

- ``"builtin"``: a :class:`~difforge.models.text_encoder.WordTokenizer` built from the training
  captions and a small transformer owned by the network (network options ``context_dim`` and
  ``text_encoder``), trained jointly; every caption is tokenised once, up front.
- a local CLIP folder: the frozen :class:`~difforge.models.clip_text.ClipText`; every distinct
  caption is embedded once, up front, and training reads the cached (L, D) rows.

Caption dropout is label dropout: with probability ``label_dropout`` an image's caption becomes
"" and its class the null class, together, which trains the unconditional branch that
classifier-free guidance subtracts (the pipeline's unconditional row is the same "" and null class).
The model file's ``text`` entry (:meth:`TextConditioning.link`) is what the pipeline needs:
the vocabulary, or the CLIP folder's path and sha256.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from ..errors import ConfigError

# What a run that does not set or record an option is built with. depth 2 is what runs built before a new run got
# train/autonet.TEXT_DEPTH (1) recorded in its config; it stays, so those resume and fine-tune as they were built.
ENCODER_DEFAULTS = dict(dim=128, depth=2, heads=4, max_length=32, pool="words")  # pool: models/text_encoder.text_condition


def encoder_options(config) -> Dict[str, Any]:
    """The built-in encoder's options: :data:`ENCODER_DEFAULTS`, with what the run's ``text_encoder``
    network option sets (``--network-option 'text_encoder={"depth": 0}'``); the vocabulary size is
    the captions'. Unknown keys are refused by name, here, before anything is built."""
    given = config.model.network_options.get("text_encoder") or {}
    if not isinstance(given, dict) or set(given) - set(ENCODER_DEFAULTS):
        raise ConfigError(f"network option text_encoder={given!r}: the built-in encoder takes an object of "
                          f"{', '.join(sorted(ENCODER_DEFAULTS))} (e.g. {{\"depth\": 0}})")
    if given and config.model.text_encoder != "builtin":
        raise ConfigError("network option text_encoder sets the built-in encoder; a CLIP encoder is its folder's (drop the option)")
    return dict(ENCODER_DEFAULTS, **given)


def training_captions(config, data) -> List[str]:
    """One caption per training image: the built-in set's exact captions, or a folder's (data/captions.py)."""
    dc = config.data
    if dc.data is None:
        from ..config import materials_of
        from ..data.builtin_captions import generate_captioned

        *_, captions, _ = generate_captioned(dc.image_size, dc.builtin_per_class, dc.builtin_seed,
                                             materials=materials_of(dc.builtin_materials))
        if len(captions) != len(data.images):
            raise ConfigError("the built-in captions do not line up with the built-in images; use a folder with metadata.jsonl")
        return captions
    from ..data.captions import read_captions

    labels = data.labels.tolist() if data.labels is not None else []
    return read_captions(dc.data, data.paths, data.class_names, labels, template=dc.caption_template)


class TextConditioning:
    """The captions of a run, ready for the network: token ids (built-in) or cached CLIP embeddings."""

    def __init__(self, captions: List[str], kind: str, tokenizer=None, clip=None, labels=None, encoder: Optional[Dict[str, Any]] = None):
        self.captions, self.kind, self.tokenizer, self.clip, self.labels = captions, kind, tokenizer, clip, labels
        self.encoder = encoder or ENCODER_DEFAULTS  # the built-in encoder's options (encoder_options)
        self.what = kind
        if kind == "builtin":
            self.ids = tokenizer.encode(captions)
            self.empty = tokenizer.encode([""])[0]
        else:
            uniq = sorted(set(captions) | {""})
            self.row = torch.tensor([uniq.index(c) for c in captions], dtype=torch.long)
            self.empty_row = uniq.index("")
            self.table, self.table_mask = clip.encode(uniq)

    @classmethod
    def prepare(cls, config, data, network: str) -> "TextConditioning":
        from ..models import registry

        if "context_dim" not in registry.options(network):
            raise ConfigError(f"text conditioning needs a network with cross-attention (unet, unet-small, unet-tiny, adm, dit), "
                              f"not {network!r}")
        captions = training_captions(config, data)
        name = config.model.text_encoder
        if name == "builtin":
            from ..models.text_encoder import WordTokenizer

            options = encoder_options(config)
            out = cls(captions, "builtin", tokenizer=WordTokenizer.build(captions, options["max_length"]), labels=data.labels, encoder=options)
            what = f"built-in text encoder, {len(out.tokenizer.vocab)} words"
        else:
            for flag in ("word_dropout", "phrase_dropout"):
                if getattr(config.diffusion, flag) > 0:
                    raise ConfigError(f"{flag} needs the built-in text encoder (a CLIP encoder's captions are embedded once, "
                                      f"whole); drop --{flag.replace('_', '-')} or use --text-encoder builtin")
            from ..models.clip_text import ClipText

            encoder_options(config)  # refuses built-in encoder options
            out = cls(captions, "clip", clip=ClipText(name), labels=data.labels)
            what = f"CLIP text encoder {out.clip.path} ({out.clip.dim}-d, {len(out.table)} distinct captions embedded once)"
        out.what = f"{what}; e.g. {captions[0]!r}"
        return out

    def describe(self) -> str:
        return self.what

    def network_options(self) -> Dict[str, Any]:
        if self.kind == "builtin":
            enc = dict(self.encoder, vocab_size=len(self.tokenizer.vocab))
            return {"context_dim": enc["dim"], "text_encoder": enc}
        return {"context_dim": self.clip.dim, "text_encoder": None}

    def link(self, model_dir: Path) -> Dict[str, Any]:
        """The model file's ``text`` entry, with its distinct captions as templates (what the place
        contrast and the analogy go by: :mod:`difforge.pipeline.places`, :mod:`difforge.pipeline.analogy`)."""
        from ..pipeline.places import caption_templates

        templates = caption_templates(self.captions)
        seen = {} if templates is None else {"templates": templates}
        if self.kind == "builtin":
            return {"encoder": "builtin", "vocab": self.tokenizer.vocab, "max_length": self.tokenizer.max_length, **seen}
        return {**self.clip.link(model_dir), **seen}

    def context(self, index: torch.Tensor, drop: torch.Tensor, device) -> Dict[str, Optional[torch.Tensor]]:
        """``context`` / ``context_mask`` keywords for dataset rows ``index``; ``drop`` rows get "" (CFG)."""
        index = index.cpu()
        drop = drop.cpu()
        if self.kind == "builtin":
            ids = torch.where(drop[:, None], self.empty[None], self.ids[index])
            return {"context": ids.to(device), "context_mask": None}
        rows = torch.where(drop, torch.full_like(index, self.empty_row), self.row[index])
        return {"context": self.table[rows].to(device), "context_mask": self.table_mask[rows].to(device)}

    @functools.cached_property
    def phrase_ids(self) -> List[List[List[int]]]:
        """The word ids of every caption's phrases (built-in encoder), made on the first phrase dropout."""
        return [self.tokenizer.phrase_ids(c) for c in self.captions]

    def without_phrases(self, index: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
        """Token ids (B, L) of dataset rows ``index`` (built-in encoder) with phrase ``k`` of row ``r``
        left out where ``dropped[r, k]``: the kept phrases close up, as the shorter caption a user
        would write ("a large scratch on brushed steel"), so the words keep the places they have in
        such a prompt. Phrases past ``dropped``'s width are kept."""
        from ..models.text_encoder import BOS, PAD

        out = torch.full((len(index), self.ids.shape[1]), PAD, dtype=torch.long)
        for r, i in enumerate(index.tolist()):
            kept = [t for k, part in enumerate(self.phrase_ids[i]) if not (k < dropped.shape[1] and bool(dropped[r, k])) for t in part]
            row = [BOS, *kept][: out.shape[1]]
            out[r, : len(row)] = torch.tensor(row, dtype=torch.long)
        return out

    def preview_view(self, pipe, n: int):
        """(prompt view of ``pipe``, labels) for ``n`` preview / evaluation images: the captions and
        classes of training images spread evenly over the set."""
        from ..pipeline.text import rows_view

        rows = [(i * len(self.captions)) // max(n, 1) for i in range(n)]
        classes = None if self.labels is None else [int(self.labels[r]) for r in rows]
        if pipe.text is None:
            pipe.text = self.runtime()
        return rows_view(pipe, [self.captions[r] for r in rows], classes)

    def runtime(self):
        """What a Pipeline encodes prompts with (the same tokenizer / the already loaded CLIP)."""
        if self.kind == "builtin":
            from ..pipeline.text import BuiltinText

            return BuiltinText(self.link(Path(".")))
        return self.clip


def probe_text(config, data, batch_size: int):
    """(network options, forward keywords) that make a timing probe's network (train/autonet.py) the
    one a text run builds and feed it a batch of captions, so that the step it times is the run's:
    the encoder and cross-attention are 15% of a unet-tiny text step at 32 px (0.20 vs 0.17 s, bf16,
    one thread) and more of a wider net's. Without text: ({}, {}). A CLIP run is timed with zeros of
    the folder's embedding shape (its encoder is frozen and its embeddings cached)."""
    name = config.model.text_encoder
    if not name:
        return {}, {}
    if name == "builtin":
        from ..models.text_encoder import WordTokenizer

        captions = training_captions(config, data)
        enc = encoder_options(config)
        tok = WordTokenizer.build(captions, enc["max_length"])
        ids = tok.encode([captions[i % len(captions)] for i in range(batch_size)])
        return {"context_dim": enc["dim"], "text_encoder": dict(enc, vocab_size=len(tok.vocab))}, {"context": ids}
    from ..models.clip_text import text_shape

    length, dim = text_shape(name)
    return {"context_dim": dim, "text_encoder": None}, {"context": torch.zeros(batch_size, length, dim)}


MAX_PHRASES = 8  # phrase-dropout draws per caption; a longer caption's later phrases are always kept


def condition(text: TextConditioning, batch, rng, dropout: float, num_classes: int, device, word_dropout: float = 0.0,
              phrase_dropout: float = 0.0):
    """(labels or None, text keywords) of a micro-batch: caption and class dropped together with
    probability ``dropout`` (one draw per image of the global batch); with ``phrase_dropout`` each
    phrase of a built-in encoder's caption (models/text_encoder.phrases) is also left out with that
    probability (:meth:`TextConditioning.without_phrases`), and with ``word_dropout`` each word
    (:func:`drop_words`)."""
    drop = rng.rand(()) < dropout  # this rank's rows
    y = None
    if batch.labels is not None:
        y = torch.where(drop, torch.full_like(rng.local(batch.labels), num_classes), rng.local(batch.labels)).to(device)
    ctx = text.context(batch.index, drop, device)
    if phrase_dropout > 0 and text.kind == "builtin":  # drawn before the word dropout: word-dropout runs draw as before
        shorter = text.without_phrases(batch.index.cpu(), rng.rand((MAX_PHRASES,)) < phrase_dropout).to(device)
        ctx["context"] = torch.where(drop.to(device)[:, None], ctx["context"], shorter)
    if word_dropout > 0 and text.kind == "builtin":  # drawn after the caption dropout: runs without it draw nothing new
        ctx["context"] = drop_words(ctx["context"], rng.rand((ctx["context"].shape[1],), device) < word_dropout)
    return y, ctx


def drop_words(ids: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
    """Token ids (B, L) with the words where ``dropped`` (B, L) is true turned into padding; the start token stays.

    Why: with every caption naming defect, material and position together, a network can learn each
    *combination* by heart; seeing "a crack" without its material and "on wood" without its defect
    teaches what each word does alone, which is what an unseen combination needs (benchmarks/text_conditioning.py).
    """
    from ..models.text_encoder import BOS, PAD

    return torch.where(dropped & (ids != BOS), torch.full_like(ids, PAD), ids)


__all__ = ["ENCODER_DEFAULTS", "MAX_PHRASES", "TextConditioning", "condition", "drop_words", "encoder_options", "probe_text", "training_captions"]
