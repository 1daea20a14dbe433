"""The built-in text encoder: a word tokenizer built from the training captions and a small
transformer trained jointly with the diffusion network, so text conditioning works offline.

- :class:`WordTokenizer`: lower-cased Unicode words (``\\w+``), a vocabulary of the training
  captions' words by frequency; ids 0 = padding, 1 = start (always emitted, so the empty caption
  is one start token and cross-attention never sees an all-padding context), 2 = unknown. Its
  word list is stored in the model file's metadata (``text.vocab``).
- :class:`BuiltinTextEncoder`: token + position embeddings, ``depth`` pre-norm transformer
  layers (SDPA with the padding mask), a final LayerNorm: ids (B, L) -> (tokens (B, L, dim),
  mask (B, L)). It is a sub-module of the network (``text_encoder`` network option), so its
  weights live in the same state dict, EMA and model file as the network's.

A network with text takes ``context`` = token ids (encoded here, inside its forward, so the
encoder trains with the network) or precomputed float embeddings (a frozen CLIP,
:mod:`difforge.models.clip_text`), plus ``context_mask``; :func:`text_context` does that choice.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import ConfigError
from .layers import attention

PAD, BOS, UNK = 0, 1, 2
POOLS = ("tokens", "words")  # what the pooled-text path averages; see text_condition
SPECIALS = ("<pad>", "<bos>", "<unk>")
_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> List[str]:
    """The lower-cased words of ``text`` (NFC; punctuation and spaces separate words)."""
    return _WORD.findall(unicodedata.normalize("NFC", text).lower())


# Words that open a phrase of a caption ("at the top left", "on brushed steel", "near the edge").
PHRASE_WORDS = frozenset({"at", "in", "on", "near", "along", "across", "over", "under", "with", "without", "from", "by",
                          "beside", "inside", "around", "between", "through", "towards"})
_PHRASE_BREAK = re.compile(r"[,;:]")


def phrases(text: str) -> List[str]:
    """The phrases of a caption, in order: split at ``,`` ``;`` ``:`` and before a preposition
    (:data:`PHRASE_WORDS`), so "a large scratch at the top left on brushed steel" is "a large scratch",
    "at the top left", "on brushed steel". Their words, joined, are the caption's :func:`words`.

    Why: phrase dropout (train/text_cond.py) leaves whole attributes out of a caption, and a
    composed prompt asks for each phrase as one part; a word-level split would tear "top left" apart."""
    out: List[str] = []
    for part in _PHRASE_BREAK.split(text):
        current: List[str] = []
        for w in words(part):
            if w in PHRASE_WORDS and current:
                out.append(" ".join(current))
                current = []
            current.append(w)
        if current:
            out.append(" ".join(current))
    return out


class WordTokenizer:
    """Words <-> ids over a fixed vocabulary (``vocab[i]`` is the word of id ``i``, specials first)."""

    def __init__(self, vocab: Sequence[str], max_length: int = 32):
        vocab = list(vocab)
        if tuple(vocab[:3]) != SPECIALS or len(set(vocab)) != len(vocab):
            raise ConfigError(f"a text vocabulary starts with {', '.join(SPECIALS)} and has distinct words")
        self.vocab = vocab
        self.index = {w: i for i, w in enumerate(vocab)}
        self.max_length = int(max_length)

    @classmethod
    def build(cls, captions: Iterable[str], max_length: int = 32) -> "WordTokenizer":
        """The vocabulary of ``captions``: every word, most frequent first (ties alphabetical)."""
        counts = Counter(w for c in captions for w in words(c))
        return cls([*SPECIALS, *sorted(counts, key=lambda w: (-counts[w], w))], max_length)

    def unknown(self, text: str) -> List[str]:
        """The words of ``text`` that are not in the vocabulary."""
        return [w for w in words(text) if w not in self.index]

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """int64 (B, max_length): start token, word ids (unknown -> 2), padding; longer texts are cut."""
        out = torch.full((len(texts), self.max_length), PAD, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = [BOS] + [self.index.get(w, UNK) for w in words(text)]
            ids = ids[: self.max_length]
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def phrase_ids(self, text: str) -> List[List[int]]:
        """The word ids of each of ``text``'s :func:`phrases` (unknown -> 2), without the start token."""
        return [[self.index.get(w, UNK) for w in words(p)] for p in phrases(text)]

    def decode(self, ids: torch.Tensor) -> str:
        """The words of one id row, joined by spaces (specials left out)."""
        return " ".join(self.vocab[int(i)] for i in ids if int(i) > UNK)


class _Layer(nn.Module):
    """Pre-norm transformer layer: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = attention(q, k, v, attn_mask=mask[:, None, None, :])
        x = x + self.proj(out.transpose(1, 2).reshape(b, n, c))
        return x + self.mlp(self.norm2(x))


class BuiltinTextEncoder(nn.Module):
    """ids (B, L) -> (tokens (B, L, dim), mask (B, L) bool); see the module docstring."""

    def __init__(self, vocab_size: int, dim: int = 128, depth: int = 2, heads: int = 4, max_length: int = 32,
                 pool: str = "tokens"):
        super().__init__()
        if pool not in POOLS:
            raise ConfigError(f"text_encoder option pool must be one of {', '.join(POOLS)}, got {pool!r}")
        for field, value, low in (("vocab_size", vocab_size, 4), ("dim", dim, 8), ("depth", depth, 0),
                                  ("heads", heads, 1), ("max_length", max_length, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"text_encoder option {field} must be an integer >= {low}, got {value!r}")
        if dim % heads:
            raise ConfigError(f"text_encoder option heads={heads} must divide dim={dim}")
        self.config = dict(vocab_size=vocab_size, dim=dim, depth=depth, heads=heads, max_length=max_length, pool=pool)
        self.token = nn.Embedding(vocab_size, dim)
        self.position = nn.Parameter(torch.zeros(max_length, dim))
        nn.init.normal_(self.token.weight, std=0.02)
        nn.init.normal_(self.position, std=0.02)
        self.layers = nn.ModuleList([_Layer(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def embed_words(self, ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(word embeddings (B, L, dim), mask (B, L)) of ids cut to ``max_length``: before positions and layers."""
        ids = ids[:, : self.position.shape[0]].clamp(0, self.token.num_embeddings - 1)
        return self.token(ids), ids != PAD

    def forward(self, ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        words, mask = self.embed_words(ids)
        x = words + self.position[: words.shape[1]]
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x), mask


def make_text_encoder(net: str, context_dim: int, options: Optional[Dict[str, Any]]) -> Optional[BuiltinTextEncoder]:
    """The built-in encoder a network owns (``text_encoder`` network option), or None; its ``dim``
    must be the network's ``context_dim``."""
    if options is None:
        return None
    if not isinstance(options, dict):
        raise ConfigError(f"{net} option text_encoder must be an object of encoder options or null, got {options!r}")
    encoder = BuiltinTextEncoder(**options)
    if encoder.config["dim"] != context_dim:
        raise ConfigError(f"{net} option context_dim={context_dim} must equal text_encoder dim={encoder.config['dim']}")
    return encoder


def text_modules(net: str, context_dim: int, options: Optional[Dict[str, Any]], emb_dim: int):
    """(built-in encoder or None, pooled-text projection or None) of a network with ``context_dim``.

    The projection adds the mean of the text tokens to the network's conditioning vector (time
    embedding), as Imagen does beside cross-attention (Saharia et al. 2022, sec. 2.3): a global
    path that learns fast (material, defect type), while cross-attention places the details.
    It starts at zero, so a new text network is the same function as one without text.
    """
    if not context_dim:
        return make_text_encoder(net, context_dim, options), None
    pool = nn.Linear(context_dim, emb_dim)
    nn.init.zeros_(pool.weight)
    nn.init.zeros_(pool.bias)
    return make_text_encoder(net, context_dim, options), pool


def text_condition(net: nn.Module, context, context_mask, emb: torch.Tensor):
    """(cross-attention context or None, ``emb`` plus the pooled text): :func:`text_context` and the
    projection of :func:`text_modules` applied to the mean of the real tokens.

    With the built-in encoder's ``pool="words"`` (new text runs) the mean is over the caption's word
    embeddings before the transformer: a sum of one vector per word, so "crack" and "wood" each move
    the conditioning the same way in every caption and a combination never trained on is the sum of
    known parts. The mean of the transformer's outputs (``"tokens"``, files written before) mixes
    the words first and let the network learn combinations by heart: in the 12-minute text benchmark
    (benchmarks/text_conditioning.py) it drew the wrong defect for 89% of held-out combinations."""
    ctx = text_context(net, context, context_mask)
    pool = getattr(net, "text_pool", None)
    if ctx is None or pool is None:
        return ctx, emb
    return ctx, emb + pool(pooled_text(net, context, ctx).to(emb.dtype))


def pooled_text(net: nn.Module, context: torch.Tensor, ctx, reduce: str = "mean") -> torch.Tensor:
    """(B, context_dim): the mean (or ``reduce="sum"``) of the caption's real tokens (:func:`text_condition`)."""
    tokens, mask = ctx
    encoder = getattr(net, "text_encoder", None)
    if encoder is not None and encoder.config["pool"] == "words" and not context.is_floating_point():
        tokens, mask = encoder.embed_words(context)  # the words themselves, before the transformer mixes them
    w = torch.ones(tokens.shape[:2], device=tokens.device, dtype=tokens.dtype) if mask is None else mask.to(tokens.dtype)
    total = (tokens * w[..., None]).sum(1)
    return total if reduce == "sum" else total / w.sum(1, keepdim=True).clamp(min=1.0)


class TextLayout(nn.Module):
    """A coarse map from the pooled caption, added to the first feature maps: where things go.

    The pooled text reaches the network as a per-channel shift of every feature map (the time
    embedding), which says *what* but cannot say *where*: a shift is the same at every pixel.
    This projects the caption's words to a ``grid`` x ``grid`` map per channel (bilinearly
    resized to the features), so that "at the top left" can add a feature at the top left that
    the rest of the network then draws around, as a layout hint would. It starts at zero.
    The words are summed, not averaged: a word then adds the same map whatever else the caption
    says, also in a part of a composed prompt (:mod:`difforge.pipeline.compose`), where a mean
    would give a one-word part the weight of a whole caption.

    ``rank`` r > 0 makes the caption draw only r maps, which a 1 x 1 convolution spreads over the
    channels: the caption says *where* and the rest of the network (pooled path, cross-attention)
    *what*; 0 gives every channel its own map.
    """

    def __init__(self, context_dim: int, channels: int, grid: int, rank: int = 0):
        super().__init__()
        self.maps, self.grid = rank or channels, grid
        self.proj = nn.Linear(context_dim, self.maps * grid * grid)
        nn.init.zeros_(self.proj.weight)  # starts at zero; the spread below stays random so the maps still learn
        nn.init.zeros_(self.proj.bias)
        self.spread = nn.Conv2d(rank, channels, 1, bias=False) if rank else None

    def forward(self, pooled: torch.Tensor, size) -> torch.Tensor:
        coarse = self.proj(pooled).reshape(-1, self.maps, self.grid, self.grid)
        fine = torch.nn.functional.interpolate(coarse, size=tuple(size), mode="bilinear", align_corners=False)
        return fine if self.spread is None else self.spread(fine)


def text_context(net: nn.Module, context: Optional[torch.Tensor], context_mask: Optional[torch.Tensor]):
    """(context, mask) for cross-attention, or None without text: integer ``context`` is token ids for
    the network's own encoder; float ``context`` is used as given (e.g. cached CLIP embeddings)."""
    if context is None:
        return None
    if not context.is_floating_point():
        encoder = getattr(net, "text_encoder", None)
        if encoder is None:
            raise ValueError("token ids given as context, but this network has no built-in text encoder")
        return encoder(context)
    return context, context_mask


__all__ = ["BOS", "PAD", "PHRASE_WORDS", "SPECIALS", "UNK", "BuiltinTextEncoder", "TextLayout", "WordTokenizer", "make_text_encoder", "phrases",
           "pooled_text", "text_condition", "text_context", "text_modules", "words"]
