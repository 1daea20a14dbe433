"""InceptionV3 as FID uses it: the 2015 TensorFlow graph's network, with its weights ported to PyTorch.

The layer names and shapes are those of the widely used weight file
``pt_inception-2015-12-05-6726825d.pth`` (the pytorch-fid release), so that file loads as is.
Four things differ from the ImageNet InceptionV3 of torchvision, all to reproduce the TF graph:

- 1008 output classes (``fc`` is 2048 -> 1008);
- every average pool inside a block ignores the zero padding (``count_include_pad=False``, as TF);
- the last block (``Mixed_7c``) max-pools in its pool branch, where ``Mixed_7b`` averages;
- input preprocessing: uint8 -> [0, 1] -> bilinear resize to 299x299 (``align_corners=False``,
  no antialiasing, as pytorch-fid) -> scale to [-1, 1] (``2x - 1``).

:meth:`FIDInception.forward` returns the three outputs the metrics need:

- ``pool``: the 2048-d global average pool after ``Mixed_7c`` (TF ``pool_3``): FID, KID, P/R.
- ``spatial``: sFID features, the first 7 channels of the TF node ``mixed_6/conv`` flattened in
  TF's (H, W, C) order: 17 * 17 * 7 = 2023 values. The TF graph names its blocks ``mixed``,
  ``mixed_1`` ... ``mixed_10``, so ``mixed_6`` is ``Mixed_6d``; ``mixed_6/conv`` is that block's 1x1
  branch after its ReLU (``Mixed_6d.branch1x1``), which is also the first 192 channels of the
  block's output. This is what guided-diffusion's evaluator takes (``spatial[..., :7]``).
- ``logits``: ``pool @ fc.weight.T`` without the bias, 1008 classes, exactly the
  ``softmax/logits/MatMul`` input that the original Inception Score code (improved-gan, and
  guided-diffusion's evaluator after it) feeds to the softmax.

Numbers match pytorch-fid's; the TF graph itself resizes slightly differently, so FID against
statistics computed by TF tools (e.g. guided-diffusion's reference ``mu``/``sigma``) can differ a
little in the last digits.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILE}"
WEIGHTS_SHA256_PREFIX = "6726825d"  # torch hub convention: the file name carries its hash's first digits
WEIGHTS_ENV = "DIFFORGE_INCEPTION_WEIGHTS"
SPATIAL_CHANNELS = 7
INPUT_SIZE = 299

PathLike = Union[str, os.PathLike]


class _Conv(nn.Module):
    """Conv (no bias) + BatchNorm (eps 1e-3, the TF value) + ReLU; named ``conv`` / ``bn`` as in the file."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold the BatchNorm into the conv for inference: w' = w g / sqrt(v + eps), b' = beta - m g / sqrt(v + eps)."""
        if isinstance(self.bn, nn.Identity):
            return
        bn, old = self.bn, self.conv
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        with torch.device("meta"):
            conv = nn.Conv2d(old.in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=True)
        conv.weight = nn.Parameter(old.weight * scale[:, None, None, None], requires_grad=False)
        conv.bias = nn.Parameter(bn.bias - bn.running_mean * scale, requires_grad=False)
        self.conv, self.bn = conv, nn.Identity()


def _avg3(x):
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _BlockA(nn.Module):
    """35x35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 -> 224 + pool_features channels."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = _Conv(cin, 64, 1)
        self.branch5x5_1 = _Conv(cin, 48, 1)
        self.branch5x5_2 = _Conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, 1)
        self.branch3x3dbl_2 = _Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, 3, padding=1)
        self.branch_pool = _Conv(cin, pool_features, 1)

    def forward(self, x):
        a = self.branch1x1(x)
        b = self.branch5x5_2(self.branch5x5_1(x))
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        d = self.branch_pool(_avg3(x))
        return torch.cat([a, b, c, d], 1)


class _BlockB(nn.Module):
    """35x35 -> 17x17 reduction: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = _Conv(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, 1)
        self.branch3x3dbl_2 = _Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, 3, stride=2)

    def forward(self, x):
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([a, b, F.max_pool2d(x, 3, stride=2)], 1)


class _BlockC(nn.Module):
    """17x17 block with factorised 7x7 convolutions; 768 channels out, ``branch1x1`` first."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = _Conv(cin, 192, 1)
        self.branch7x7_1 = _Conv(cin, c7, 1)
        self.branch7x7_2 = _Conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _Conv(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _Conv(cin, c7, 1)
        self.branch7x7dbl_2 = _Conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _Conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _Conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _Conv(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = _Conv(cin, 192, 1)

    def forward(self, x):
        a = self.branch1x1(x)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        c = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            c = conv(c)
        d = self.branch_pool(_avg3(x))
        return torch.cat([a, b, c, d], 1)


class _BlockD(nn.Module):
    """17x17 -> 8x8 reduction: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = _Conv(cin, 192, 1)
        self.branch3x3_2 = _Conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _Conv(cin, 192, 1)
        self.branch7x7x3_2 = _Conv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _Conv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _Conv(192, 192, 3, stride=2)

    def forward(self, x):
        a = self.branch3x3_2(self.branch3x3_1(x))
        b = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([a, b, F.max_pool2d(x, 3, stride=2)], 1)


class _BlockE(nn.Module):
    """8x8 block with split 1x3 / 3x1 branches; 2048 channels out. ``max_pool``: the Mixed_7c quirk."""

    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _Conv(cin, 320, 1)
        self.branch3x3_1 = _Conv(cin, 384, 1)
        self.branch3x3_2a = _Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _Conv(cin, 448, 1)
        self.branch3x3dbl_2 = _Conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _Conv(cin, 192, 1)

    def forward(self, x):
        a = self.branch1x1(x)
        b = self.branch3x3_1(x)
        b = torch.cat([self.branch3x3_2a(b), self.branch3x3_2b(b)], 1)
        c = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        c = torch.cat([self.branch3x3dbl_3a(c), self.branch3x3dbl_3b(c)], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg3(x)
        return torch.cat([a, b, c, self.branch_pool(pooled)], 1)


class FIDInception(nn.Module):
    """The FID InceptionV3 (see the module docstring). Input: uint8 or [0, 255] float (N, 3, H, W)."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = _Conv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _Conv(32, 32, 3)
        self.Conv2d_2b_3x3 = _Conv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _Conv(64, 80, 1)
        self.Conv2d_4a_3x3 = _Conv(80, 192, 3)
        self.Mixed_5b = _BlockA(192, 32)
        self.Mixed_5c = _BlockA(256, 64)
        self.Mixed_5d = _BlockA(288, 64)
        self.Mixed_6a = _BlockB(288)
        self.Mixed_6b = _BlockC(768, 128)
        self.Mixed_6c = _BlockC(768, 160)
        self.Mixed_6d = _BlockC(768, 160)
        self.Mixed_6e = _BlockC(768, 192)
        self.Mixed_7a = _BlockD(768)
        self.Mixed_7b = _BlockE(1280, max_pool=False)
        self.Mixed_7c = _BlockE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    def fuse(self) -> "FIDInception":
        """Fold every BatchNorm into its conv (inference only; ~20% faster, same outputs to ~1e-6)."""
        for m in self.modules():
            if isinstance(m, _Conv):
                m.fuse()
        return self

    @staticmethod
    def preprocess(images: torch.Tensor) -> torch.Tensor:
        """uint8 / [0, 255] (N, 3, H, W) -> [-1, 1] at 299x299, resized as pytorch-fid does."""
        x = images.float() / 255.0
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return (2.0 * x - 1.0).contiguous(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        x = self.preprocess(images)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c):
            x = block(x)
        x = self.Mixed_6d(x)
        # TF order (H, W, C) so that stored guided-diffusion mu_s / sigma_s line up coordinate by coordinate
        spatial = x[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).reshape(x.shape[0], -1)
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(self.Mixed_6e(x))))
        pool = x.mean(dim=(2, 3))
        logits = pool @ self.fc.weight.t()
        return {"pool": pool, "spatial": spatial, "logits": logits}


# ----------------------------------------------------------------------------- weights


def weight_candidates() -> list:
    """Where the weight file is looked for, in order (after an explicit path)."""
    out = []
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        out.append(Path(env).expanduser())
    out.append(Path("~/.cache/difforge").expanduser() / WEIGHTS_FILE)
    out.append(Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE)  # where pytorch-fid caches it
    return out


def _missing_message(tried) -> str:
    where = ", ".join(str(p) for p in tried)
    return (
        f"the FID Inception weights {WEIGHTS_FILE} were not found (looked in: {where}); "
        f"download it from pytorch-fid's GitHub release ({WEIGHTS_URL}) and put it in "
        f"~/.cache/difforge/, or pass --inception-weights PATH, or set {WEIGHTS_ENV}=PATH "
        f"(or use --features PATH.pt for your own TorchScript extractor)"
    )


def find_weights(path: Optional[PathLike] = None) -> Path:
    """The weight file: ``path`` if given (it must exist), else the first of :func:`weight_candidates`."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise UserError(f"Inception weight file {p} does not exist; it should be {WEIGHTS_FILE} from pytorch-fid's GitHub release ({WEIGHTS_URL})")
        return p
    tried = weight_candidates()
    for p in tried:
        if p.is_file():
            return p
    raise UserError(_missing_message(tried))


def download_weights() -> Path:
    """Fetch the weight file into ``~/.cache/difforge/`` (explicit ``--download`` only)."""
    dest = Path("~/.cache/difforge").expanduser() / WEIGHTS_FILE
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(WEIGHTS_URL, str(dest), hash_prefix=WEIGHTS_SHA256_PREFIX, progress=True)
    except Exception as e:  # no network, proxy, HTTP error, hash mismatch: all mean "get it by hand"
        raise UserError(
            f"could not download {WEIGHTS_URL} ({type(e).__name__}: {str(e).strip()[:120]}); "
            f"download it on a machine with internet access and copy it to {dest}"
        ) from e
    return dest


def expected_shapes() -> Dict[str, tuple]:
    """Parameter and buffer shapes of the weight file (BatchNorm's ``num_batches_tracked`` left out)."""
    with torch.device("meta"):
        return _shapes(FIDInception())


def _shapes(net: nn.Module) -> Dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}


def load_fid_inception(
    path: Optional[PathLike] = None, device: Union[str, torch.device] = "cpu", download: bool = False, fuse: bool = True
) -> FIDInception:
    """Build :class:`FIDInception` and load the weight file (safely: ``torch.load(weights_only=True)``).

    ``path`` None searches :func:`weight_candidates`; ``download`` fetches the file when none is found.
    The network comes back in eval mode, channels_last (3x faster convolutions on CPU) and, with
    ``fuse``, with BatchNorm folded into the convolutions.
    """
    try:
        file = find_weights(path)
    except UserError:
        if not download or path is not None:
            raise
        file = download_weights()
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(
            f"{file} cannot be read as a PyTorch weight file ({type(e).__name__}); "
            f"it should be {WEIGHTS_FILE} from {WEIGHTS_URL}"
        ) from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{file} holds a {type(state).__name__}, not a flat state dict of tensors; it should be {WEIGHTS_FILE}")
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    with torch.device("meta"):
        net = FIDInception()
    want = _shapes(net)
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    wrong = [f"{k} {tuple(state[k].shape)} (want {want[k]})" for k in want if k in state and tuple(state[k].shape) != want[k]]
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
        if wrong:
            parts.append(f"{len(wrong)} of the wrong shape (e.g. {wrong[0]})")
        raise UserError(f"{file} is not the FID Inception weight file {WEIGHTS_FILE}: tensors {'; '.join(parts)}")
    net.load_state_dict({k: v.float() for k, v in state.items()}, strict=False, assign=True)
    for name, buf in net.named_buffers():  # num_batches_tracked, unused in eval
        if buf.is_meta:
            mod, _, attr = name.rpartition(".")
            setattr(net.get_submodule(mod), attr, torch.zeros((), dtype=torch.long))
    net = net.eval().requires_grad_(False)
    net.weights_file = Path(file)
    if fuse:
        net.fuse()
    return net.to(device=device, memory_format=torch.channels_last)

