"""A frozen CLIP text encoder from a local folder: a tiny random CLIPTextModel and a tiny BPE
tokenizer written to a temporary folder (nothing is downloaded) load through the local-path
code; the same caption gives the same embedding; a hub id is refused; the link is hash-checked."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from difforge.errors import CheckpointError, ConfigError  # noqa: E402
from difforge.models.clip_text import ClipText, load_linked  # noqa: E402


def _bytes_to_unicode():
    """GPT-2's reversible byte -> printable character table (what CLIP's BPE vocabulary is written in)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def make_tiny_clip(folder):
    """A random 2-layer CLIPTextModel (32-d) and a byte-level BPE tokenizer saved to ``folder``."""
    chars = _bytes_to_unicode()
    vocab = {}
    for c in chars + [c + "</w>" for c in chars] + ["sc", "scr</w>", "<|startoftext|>", "<|endoftext|>"]:
        vocab.setdefault(c, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\ns c\nsc r</w>\n", encoding="utf-8")
    config = transformers.CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                         num_attention_heads=4, max_position_embeddings=16,
                                         bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"])
    torch.manual_seed(0)
    transformers.CLIPTextModel(config).save_pretrained(folder, safe_serialization=True)
    tok = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


def test_local_folder_loads_and_the_same_caption_gives_the_same_embedding(clip_dir):
    enc = ClipText(clip_dir)
    assert enc.dim == 32 and enc.max_length == 16
    ctx, mask = enc.encode(["a long scratch", "a crack", "a long scratch", ""])
    assert ctx.shape == (4, 16, 32) and mask.shape == (4, 16) and mask.dtype == torch.bool
    assert torch.equal(ctx[0], ctx[2]) and not torch.allclose(ctx[0], ctx[1])
    assert mask[3].sum() == 2  # start and end tokens of the empty caption
    fresh, _ = ClipText(clip_dir).encode(["a long scratch"])  # computed again, not from the cache
    assert torch.allclose(fresh[0], ctx[0], atol=1e-5)


def test_hub_id_is_refused_with_what_to_download(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"never downloads.*huggingface-cli download openai/clip-vit-base-patch32"):
        ClipText("openai/clip-vit-base-patch32")


def test_link_is_hash_checked(clip_dir, tmp_path):
    link = ClipText(clip_dir).link(tmp_path)
    assert link["encoder"] == "clip" and len(link["sha256"]) == 64
    assert load_linked(link, tmp_path / "ema.safetensors").path == clip_dir.resolve()
    with pytest.raises(CheckpointError, match="not the CLIP"):
        load_linked(dict(link, sha256="0" * 64), tmp_path / "ema.safetensors")
    with pytest.raises(CheckpointError, match="not there any more"):
        load_linked(dict(link, path=str(tmp_path / "gone"), relpath=None), tmp_path / "ema.safetensors")
