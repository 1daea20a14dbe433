"""``POST /v1/upscale`` and ``GET /v1/upscalers``: upscale an uploaded image with a super-resolution model.

The server's SR model files (a diffusion upsampler or a regression upscaler from ``train-sr``,
given like any model file) are served here and not by ``/v1/generate``: :func:`split_upscalers`
takes them out of the models at start-up. The body is JSON with the image as base64 PNG/JPEG.
Bounds, all checked before any work: the body limit of upload paths (``max_upload_bytes``,
enforced by :class:`difforge.serve.limits.Guard` before the body is read), the image at most
:data:`MAX_INPUT_SIDE` pixels a side (read from the header, before decoding; the output is then
at most ``scale`` x that), ``steps`` <= ``max_steps``. One upscaling runs at a time per server; at
most ``queue`` more wait, further requests get 429 at once.
"""

# No `from __future__ import annotations`: pydantic and FastAPI read these annotations at runtime.
import io
import time
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from ..errors import UserError
from .errors import ApiError
from .inpaint import Runner, _bytes, _open, _png

MAX_INPUT_SIDE = 512  # input pixels a side: a x4 model answers at most 2048 x 2048
PATH = "/v1/upscale"


def split_upscalers(models: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(generating models, ``{name: Upscaler}``) of a server's loaded models (Pipelines or Upscalers)."""
    from ..pipeline.upscale import Upscaler

    gen, ups = {}, {}
    for name, m in models.items():
        if isinstance(m, Upscaler):
            ups[name] = m
        elif (m.meta.get("inputs") or {}).get("low_res"):
            ups[name] = Upscaler.from_pipeline(m)
        else:
            gen[name] = m
    return gen, ups


def load_servable(path, device: str = "auto", precision: str = "auto"):
    """A model file as the server holds it: a :class:`~difforge.pipeline.Pipeline`, or an Upscaler for a regression upscaler."""
    from ..modelfile import read_metadata
    from ..pipeline import Pipeline
    from ..pipeline.upscale import Upscaler

    if read_metadata(path).get("kind") == "upscaler":
        return Upscaler.from_checkpoint(path, device=device, precision=precision)
    return Pipeline.from_checkpoint(path, device=device, precision=precision)


def request_model(settings):
    b64 = settings.max_upload_bytes

    class UpscaleRequest(BaseModel):
        """An image (any size up to MAX_INPUT_SIDE a side) to upscale by the model's scale."""

        model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

        model: Optional[str] = Field(None, description="an upscaler name from GET /v1/upscalers (optional with one)")
        image_base64: str = Field(..., min_length=8, max_length=b64, description="PNG or JPEG, base64 (a data: URL prefix is accepted)")
        class_: Union[int, str, None] = Field(None, alias="class", description="class name or index of a class-conditional upsampler")
        steps: int = Field(min(25, settings.max_steps), ge=1, le=settings.max_steps, description="diffusion upsamplers: ddim steps")
        noise_level: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False, description="noise-conditioning level (models trained with noise_aug)")
        seed: int = Field(0, ge=0, le=2**63 - 1)

    return UpscaleRequest


class UpscaleResult(BaseModel):
    model: str
    scale: int
    seconds: float
    width: int
    height: int
    png_base64: str


class UpscalerInfo(BaseModel):
    name: str
    scale: int
    kind: str
    channels: int
    classes: List[str]
    trained_input_size: int
    noise_aug: Optional[float]
    max_input_side: int


def info(name: str, up) -> Dict[str, Any]:
    return {"name": name, "scale": up.scale, "kind": "diffusion" if up.diffusion else "regression", "channels": up.channels,
            "classes": list(up.class_names), "trained_input_size": up.low_size,
            "noise_aug": (up.noise_aug or {}).get("max"), "max_input_side": MAX_INPUT_SIDE}


def decode(up, text: str) -> np.ndarray:
    """uint8 (h, w, C) of the uploaded image at the model's channels, or a 422 naming the field."""
    from ..pipeline.upscale_files import read_image

    raw = _bytes(text, "image_base64")
    im = _open(raw, "image_base64")
    w, h = im.size
    if max(w, h) > MAX_INPUT_SIDE:
        raise ApiError(422, "image_base64", f"is {w}x{h} pixels; at most {MAX_INPUT_SIDE} a side for upscaling")
    try:
        arr = read_image(io.BytesIO(raw))
    except UserError as e:
        raise ApiError(422, "image_base64", str(e)) from None
    if arr.shape[-1] != up.channels:
        arr = np.repeat(arr, 3, -1) if up.channels == 3 else arr.mean(-1, keepdims=True).round().astype(np.uint8)
    return arr


def upscale_router(upscalers: Dict[str, Any], settings, check_token, with_token: bool) -> APIRouter:
    """``POST /v1/upscale`` and ``GET /v1/upscalers`` of a server with these ``upscalers``."""
    UpscaleRequest = request_model(settings)
    runner = Runner(settings.queue, "upscaling")

    def list_upscalers():
        return {"upscalers": [info(n, u) for n, u in upscalers.items()]}

    async def upscale_route(req: UpscaleRequest, request: Request):  # type: ignore[valid-type]
        if not upscalers:
            raise ApiError(404, "model", "this server has no super-resolution model; start it with an SR model file (difforge train-sr)")
        name = req.model if req.model is not None else (next(iter(upscalers)) if len(upscalers) == 1 else None)
        if name is None:
            raise ApiError(422, "model", f"this server has {len(upscalers)} upscalers; choose one of: {', '.join(upscalers)}")
        if name not in upscalers:
            raise ApiError(404, "model", f"unknown upscaler {name[:60]!r}; this server has: {', '.join(upscalers)}")
        request.state.model = name
        up = upscalers[name]
        label = req.class_
        try:
            if isinstance(label, int) and not isinstance(label, bool):
                if not 0 <= label < len(up.class_names):
                    raise UserError(f"class index {label} is out of range; the model has {len(up.class_names)} classes")
            elif label is not None:
                label = up.class_index(label)
            up.check_level(req.noise_level)
        except UserError as e:
            raise ApiError(422, "class" if "class" in str(e) else "noise_level", str(e)) from None
        if label is not None and not up.class_names:
            raise ApiError(422, "class", "this upscaler is not class-conditional; leave out class")
        image = decode(up, req.image_base64)
        options = dict(seed=req.seed, noise_level=req.noise_level, steps=req.steps) if up.diffusion else {}
        t0 = time.perf_counter()
        try:
            (out,) = await runner.run(up.upscale, [image], labels=[label], **options)
        except UserError as e:
            raise ApiError(422, None, str(e)) from None
        return {"model": name, "scale": up.scale, "seconds": round(time.perf_counter() - t0, 3), "width": int(out.shape[1]),
                "height": int(out.shape[0]), "png_base64": _png(out)}

    api = APIRouter(prefix="/v1", dependencies=[Depends(check_token)] if with_token else [])
    api.add_api_route("/upscalers", list_upscalers, methods=["GET"], summary="The super-resolution models this server offers")
    api.add_api_route("/upscale", upscale_route, methods=["POST"], name="upscale", response_model=UpscaleResult,
                      summary="Upscale an uploaded image by a super-resolution model's scale (any size up to the limit, tiled)",
                      responses={404: {"description": "unknown upscaler"}, 422: {"description": "a field has a bad value; detail names it"},
                                 429: {"description": "the upscaling queue is full"}})
    return api


__all__ = ["MAX_INPUT_SIDE", "PATH", "load_servable", "split_upscalers", "upscale_router"]
