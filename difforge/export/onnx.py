"""The denoising network of a model file as an ONNX graph, and that graph back as a network.

:func:`export_onnx` traces ``net(x, t, y)`` with torch's TorchScript-based exporter (opset 17):
inputs ``x`` (B, C, H, W) float32, ``t`` (B,) float32 (fractional timesteps are fine), and ``y``
(B,) int64 class indices when the model is class-conditional (index ``num_classes`` is the null
class of classifier-free guidance); output ``out`` (B, C or 2C, H, W). The batch axis is
dynamic; H and W are the model's. The model file's metadata travels as the ONNX model's
``metadata_props`` (key ``difforge``, the same JSON), so the .onnx file describes itself too.

:class:`OnnxNet` runs such a file with ONNX Runtime and is called like the torch network,
``net(x, t, y=None) -> Tensor``, so the Pipeline, its samplers and guidance use it unchanged.

Network families: unet, adm, cspdarkunet and dit all export (with attention, class labels and a
learned variance) and match torch to ~1e-5. A noisy classifier (``kind: classifier``) exports
as ``(x, t) -> logits``. Not exported: VAE model files (a latent model's codec runs encode and
decode, not ``net(x, t)``; export the diffusion model and keep the VAE in torch), and networks
that take extra conditioning tensors (``net(x, t, y, **cond)``), which no registered family
does yet. Everything needs the ``[onnx]`` extra (``pip install 'difforge[onnx]'``).
"""

from __future__ import annotations

import importlib
import inspect
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..atomic import atomic_write
from ..errors import CheckpointError, ConfigError, UserError
from ..modelfile import file_sha256, load_model_file, load_weights_into
from ..models import registry

OPSET = 17
EXTRA = "pip install 'difforge[onnx]'"
META_KEY = "difforge"
PARAMS_KEY = "difforge_parameters"
SOURCE_KEY = "difforge_source_sha256"  # the model file the graph was exported from
BACKENDS = ("torch", "onnx")
EXPORTABLE_KINDS = ("diffusion", "classifier")


def require(module: str):
    """Import ``onnx`` / ``onnxruntime``, or one line naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"ONNX export and ONNX Runtime sampling need the {module} package: {EXTRA}") from None


def onnx_available() -> bool:
    """True when both onnx and onnxruntime import (the check step runs by default then)."""
    try:
        require("onnx")
        require("onnxruntime")
    except ConfigError:
        return False
    return True


def load_network(model_file) -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """The model file's network in eval mode on the CPU (float32), and its metadata."""
    tensors, meta = load_model_file(model_file)
    kind = meta.get("kind", "diffusion")
    if kind not in EXPORTABLE_KINDS:
        raise UserError(f"{model_file} is a {kind} model file; ONNX export takes a diffusion model (or a noisy classifier). "
                        "A latent model's VAE stays in torch: export the diffusion model file")
    try:
        net = registry.build(meta["network"]["name"], **meta["network"]["config"])
    except KeyError as e:
        raise CheckpointError(f"{model_file} lacks the {e} entry of a difforge model description") from None
    load_weights_into(net, tensors, model_file)
    return net.float().eval().requires_grad_(False), meta


def input_names(net: torch.nn.Module, meta: Dict[str, Any]) -> List[str]:
    """``x, t`` plus ``y`` for a class-conditional diffusion network."""
    if meta.get("kind", "diffusion") == "diffusion" and int(getattr(net, "num_classes", 0) or 0) > 0:
        return ["x", "t", "y"]
    return ["x", "t"]


def random_inputs(net: torch.nn.Module, meta: Dict[str, Any], batch: int = 3, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Seeded inputs: x ~ N(0, I), fractional t in [0, T), y over every class and the null class."""
    g = torch.Generator().manual_seed(seed)
    size, channels = int(net.image_size), int(net.in_channels)  # a latent model's network sees latents
    steps = int(meta.get("diffusion", {}).get("diffusion_steps", 1000))
    feed = {"x": torch.randn(batch, channels, size, size, generator=g), "t": torch.rand(batch, generator=g) * (steps - 1)}
    if "y" in input_names(net, meta):
        feed["y"] = torch.randint(0, int(net.num_classes) + 1, (batch,), generator=g)
    return feed


@dataclass
class ExportResult:
    path: Path
    inputs: List[str]
    output_shape: Tuple[int, ...]  # for a batch of one
    max_abs_diff: Optional[float]  # ONNX Runtime vs torch on random inputs; None when not checked
    check_batch: int
    seconds: float
    size_bytes: int


def export_onnx(model_file, out, *, opset: int = OPSET, check: Optional[bool] = None, check_batch: int = 3, seed: int = 0) -> ExportResult:
    """Write the model file's network to ``out`` (.onnx); ``check`` (default: when onnxruntime is
    installed) runs it with ONNX Runtime against torch on ``check_batch`` random inputs."""
    onnx = require("onnx")
    t0 = time.perf_counter()
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise UserError(f"the ONNX file name should end in .onnx, got {out}")
    net, meta = load_network(model_file)
    names = input_names(net, meta)
    example = random_inputs(net, meta, batch=2, seed=seed)
    args = tuple(example[n] for n in names)
    with torch.no_grad():
        out_shape = tuple(net(*args).shape[1:])
    with atomic_write(out) as tmp:
        _trace_to(net, args, names, tmp, opset)
        model = onnx.load(str(tmp))
        props = {META_KEY: json.dumps(meta), PARAMS_KEY: str(sum(p.numel() for p in net.parameters())), SOURCE_KEY: file_sha256(model_file)}
        for key, value in props.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        model.producer_name = "difforge"
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))
    diff = None
    if check if check is not None else onnx_available():
        diff = compare(net, OnnxNet(out), random_inputs(net, meta, batch=check_batch, seed=seed + 1))
    return ExportResult(out, names, (1, *out_shape), diff, check_batch, time.perf_counter() - t0, out.stat().st_size)


def _trace_to(net, args, names, path: Path, opset: int) -> None:
    kwargs = dict(input_names=names, output_names=["out"], opset_version=opset,
                  dynamic_axes={n: {0: "batch"} for n in [*names, "out"]}, do_constant_folding=True)
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript exporter: no onnxscript dependency, exports every family
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and deprecation warnings say nothing a user can act on
            torch.onnx.export(net, args, str(path), **kwargs)
    except Exception as e:  # the exporter raises many types; one line naming the network instead
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"the {type(net).__name__} network could not be exported to ONNX (opset {opset}): {first}") from e


def compare(net: torch.nn.Module, onnx_net: "OnnxNet", feed: Dict[str, torch.Tensor]) -> float:
    """max |ONNX Runtime - torch| over the outputs for the inputs ``feed``."""
    with torch.no_grad():
        ref = net(feed["x"], feed["t"], *([feed["y"]] if "y" in feed else []))
    got = onnx_net(feed["x"], feed["t"], feed.get("y"))
    return float((got.float() - ref.float()).abs().max())


class OnnxNet:
    """An exported network run by ONNX Runtime, called like the torch one: ``net(x, t, y=None)``.

    ``y=None`` on a conditional network means the null class. Tensors come back on ``x``'s device
    in ``x``'s floating dtype. It has no trainable parameters: ``eval``, ``requires_grad_`` and
    ``to`` return it unchanged and ``parameters()`` yields one placeholder of the exported
    network's size (on the meta device), so code that counts parameters still reports them.
    """

    training = False

    def __init__(self, path, threads: Optional[int] = None, providers: Optional[List[str]] = None):
        ort = require("onnxruntime")
        path = Path(path)
        if not path.is_file():
            raise UserError(f"ONNX file {path} does not exist; make it with: difforge export-onnx MODEL_FILE {path}")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own exception types
            raise UserError(f"{path} is not a loadable ONNX model ({str(e).splitlines()[0]})") from None
        self.path = path
        self.input_names = [i.name for i in self.session.get_inputs()]
        props = self.session.get_modelmeta().custom_metadata_map
        self.meta: Dict[str, Any] = json.loads(props.get(META_KEY, "{}"))
        self.num_parameters = int(props.get(PARAMS_KEY, 0))
        self.source_sha256 = props.get(SOURCE_KEY)
        config = self.meta.get("network", {}).get("config", {})
        self.num_classes = int(config.get("num_classes", 0) or 0) if "y" in self.input_names else 0
        self.in_channels = config.get("in_channels")
        self.image_size = config.get("image_size")

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor] = None, **cond) -> torch.Tensor:
        if cond:
            raise UserError(f"{self.path} takes x, t{', y' if self.num_classes else ''} only; extra conditioning "
                            f"({', '.join(cond)}) needs the torch backend")
        b = x.shape[0]
        t = torch.as_tensor(t, device=x.device)
        feed = {"x": x.detach().float().cpu().contiguous().numpy(),
                "t": t.detach().float().reshape(-1).expand(b).cpu().contiguous().numpy()}
        if "y" in self.input_names:
            y = torch.full((b,), self.num_classes, dtype=torch.long) if y is None else torch.as_tensor(y)
            feed["y"] = y.detach().long().reshape(-1).expand(b).cpu().contiguous().numpy()
        out = torch.from_numpy(self.session.run(None, feed)[0])
        return out.to(device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float32)

    forward = __call__

    def eval(self) -> "OnnxNet":
        return self

    def train(self, mode: bool = True) -> "OnnxNet":
        if mode:
            raise UserError("an ONNX network cannot be trained; train the model file with torch")
        return self

    def requires_grad_(self, requires_grad: bool = True) -> "OnnxNet":
        return self

    def to(self, *args, **kwargs) -> "OnnxNet":
        return self

    def parameters(self):
        return iter([torch.empty(self.num_parameters, device="meta")])

    def __repr__(self) -> str:
        return f"OnnxNet({str(self.path)!r}, inputs={self.input_names})"


def onnx_backend(model_file, backend: str = "onnx", onnx_file=None, threads: Optional[int] = None) -> OnnxNet:
    """The network of ``model_file`` run by ONNX Runtime from ``onnx_file`` (default: the model
    file's name with ``.onnx``), refused when that graph was exported from another file. Giving
    ``onnx_file`` chooses this backend by itself."""
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    path = Path(onnx_file) if onnx_file else Path(model_file).with_suffix(".onnx")
    if not path.is_file():
        raise UserError(f"ONNX file {path} does not exist; make it with: difforge export-onnx {model_file} {path}")
    net = OnnxNet(path, threads=threads or torch.get_num_threads())
    if net.source_sha256 and net.source_sha256 != file_sha256(model_file):
        raise UserError(f"{path} was exported from another model file than {model_file} (or an older version of it); "
                        f"export again: difforge export-onnx {model_file} {path}")
    return net


__all__ = ["ExportResult", "OnnxNet", "onnx_backend", "compare", "export_onnx", "load_network", "onnx_available", "require", "OPSET", "EXTRA"]
