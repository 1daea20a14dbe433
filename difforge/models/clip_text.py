"""A frozen CLIP text encoder from a *local* Hugging Face folder (``--text-encoder PATH``).

The folder is what ``save_pretrained`` writes for a ``CLIPTextModel`` (or a whole ``CLIPModel``)
plus its tokenizer: ``config.json``, ``model.safetensors``, ``vocab.json``, ``merges.txt``.
Nothing is ever downloaded: a name that is not an existing folder (a hub id such as
``openai/clip-vit-base-patch32``) is refused with one line saying what to download and how.
Weights are read from safetensors only (``use_safetensors=True``), never unpickled.
Needs ``transformers`` (``pip install 'difforge[text]'``).

The encoder is frozen, so a caption's embedding (the last hidden states, (L, D), with the
tokenizer's attention mask) is computed once and cached by :meth:`ClipText.encode`. A model file
links the folder like a VAE (:func:`link`): its absolute and relative path and :func:`folder_sha256`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ..errors import CheckpointError, ConfigError

EXTRA = "pip install 'difforge[text]'"
_FILES = ("config.json", "model.safetensors", "vocab.json", "merges.txt")


def folder_sha256(path) -> str:
    """sha256 over the folder's top-level files (names and bytes, sorted by name; hidden files skipped)."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(path).iterdir() if p.is_file() and not p.name.startswith(".")):
        h.update(f.name.encode("utf-8") + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def check_folder(name: str) -> Path:
    """``name`` as an existing local folder, or one ConfigError naming what to download."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ConfigError(f"--text-encoder {name} is a file; give the folder of a saved CLIP text model ({', '.join(_FILES)})")
    raise ConfigError(
        f"--text-encoder {name} is not a local folder and difforge never downloads: fetch it once, e.g. "
        f"`huggingface-cli download {name} --local-dir clip` (config.json, model.safetensors, vocab.json, merges.txt), "
        f"then pass --text-encoder clip; or use --text-encoder builtin"
    )


def text_shape(name: str) -> Tuple[int, int]:
    """(tokens per caption, embedding width) of a local CLIP folder, read off its ``config.json``
    without loading the model (a timing probe's stand-in context); CLIP's 77 tokens and 512 wide
    where the file does not say."""
    try:
        config = json.loads((check_folder(name) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 77, 512
    config = config.get("text_config", config) if isinstance(config, dict) else {}
    return int(config.get("max_position_embeddings", 77)), int(config.get("hidden_size", 512))


class ClipText:
    """The frozen text tower of a local CLIP folder: ``encode(texts) -> (tokens (B, L, D), mask (B, L))``."""

    def __init__(self, path, device: str = "cpu"):
        self.path = check_folder(str(path))
        try:
            from transformers import CLIPTextModel, CLIPTokenizer
        except ImportError:
            raise ConfigError(f"a CLIP text encoder needs the transformers package: {EXTRA}") from None
        try:
            self.tokenizer = CLIPTokenizer.from_pretrained(str(self.path), local_files_only=True)
            model = CLIPTextModel.from_pretrained(str(self.path), local_files_only=True, use_safetensors=True)
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ConfigError(f"--text-encoder {self.path} is not a loadable CLIP text model folder "
                              f"({', '.join(_FILES)} expected): {first}") from None
        self.model = model.to(device).eval().requires_grad_(False)
        self.max_length = int(min(self.tokenizer.model_max_length, model.config.max_position_embeddings))
        self.dim = int(model.config.hidden_size)
        self._cache: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}
        self._sha: Optional[str] = None

    @property
    def sha256(self) -> str:
        if self._sha is None:
            self._sha = folder_sha256(self.path)
        return self._sha

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> Tuple[torch.Tensor, torch.Tensor]:
        """float32 (B, L, D) last hidden states and bool (B, L) mask, on the CPU; each distinct text runs once."""
        todo: List[str] = list(dict.fromkeys(t for t in texts if t not in self._cache))
        device = next(self.model.parameters()).device
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            tok = self.tokenizer(chunk, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt")
            out = self.model(input_ids=tok["input_ids"].to(device), attention_mask=tok["attention_mask"].to(device))
            hidden = out.last_hidden_state.float().cpu()
            for j, text in enumerate(chunk):
                self._cache[text] = (hidden[j], tok["attention_mask"][j].bool())
        rows = [self._cache[t] for t in texts]
        return torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])

    def link(self, model_dir) -> Dict[str, Any]:
        """A model file's ``text`` entry for this encoder (read back by :func:`load_linked`)."""
        folder = self.path.resolve()
        try:
            rel = os.path.relpath(folder, Path(model_dir).resolve())
        except ValueError:
            rel = None
        return {"encoder": "clip", "path": str(folder), "relpath": rel, "sha256": self.sha256,
                "dim": self.dim, "max_length": self.max_length}


def load_linked(link: Dict[str, Any], model_path, override=None, device: str = "cpu") -> ClipText:
    """The CLIP folder a model file links, hash-checked: ``override`` (--text-encoder), the recorded
    path, then the recorded path relative to the model file. Another folder's hash is an error:
    other embeddings would give images unrelated to the prompt, so that is never done silently."""
    candidates = [Path(override)] if override is not None else [Path(link["path"])]
    if override is None and link.get("relpath"):
        candidates.append(Path(model_path).resolve().parent / link["relpath"])
    for i, p in enumerate(candidates):
        if not p.is_dir():
            continue
        enc = ClipText(p, device)
        if link.get("sha256") in (None, enc.sha256):
            return enc
        raise CheckpointError(f"text encoder folder {p} is not the CLIP {model_path} was trained with (sha256 "
                              f"{enc.sha256[:12]}... vs {str(link['sha256'])[:12]}...); give the original folder")
    raise CheckpointError(f"{model_path} links the CLIP text encoder {link['path']}, which is not there any more; "
                          f"give its new place (Python: Pipeline.from_checkpoint(..., text_encoder=DIR))")


__all__ = ["EXTRA", "ClipText", "check_folder", "folder_sha256", "load_linked", "text_shape"]
