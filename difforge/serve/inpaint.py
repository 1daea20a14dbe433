"""``POST /v1/inpaint``: paint a defect into the white region of a mask on an uploaded image.

The body is JSON with the image and the mask as base64 PNG/JPEG (the page draws the mask on a
canvas and sends it this way). Bounds, all checked before any work: the body limit of upload paths
(``max_upload_bytes``, enforced by :class:`difforge.serve.limits.Guard` before the body is read),
each picture at most :data:`MAX_SIDE` pixels a side (read from the header, before decoding), the
mask the image's size and binary, ``num`` <= ``max_num``, ``steps`` <= ``max_steps`` and RePaint's
resampling bounded so one request costs at most ``max_steps`` x :data:`MAX_RESAMPLE` evaluations.
One inpainting runs at a time per server (a thread beside the generate workers); at most
``queue`` more wait, further requests get 429 at once.
"""

# No `from __future__ import annotations`: pydantic and FastAPI read these annotations at runtime.
import asyncio
import base64
import binascii
import io
import time
from typing import Any, Dict, List, Literal, Optional, Union

import numpy as np
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from ..errors import UserError
from .errors import ApiError
from .settings import ServeSettings

MAX_SIDE = 4096
MAX_RESAMPLE = 20
PATH = "/v1/inpaint"


def request_model(settings: ServeSettings, samplers, default_sampler: str):
    """The ``InpaintRequest`` body of a server (its limits and samplers)."""
    Sampler = Literal[tuple(samplers)]  # type: ignore[valid-type]
    b64 = settings.max_upload_bytes

    class InpaintRequest(BaseModel):
        """An image, a mask of its size (white = paint here) and what to paint. Image i uses seed ``seed + i``."""

        model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

        model: Optional[str] = Field(None, description="a model name from GET /v1/models (optional with one model)")
        image_base64: str = Field(..., min_length=8, max_length=b64, description="the good image: PNG or JPEG, base64 (a data: URL prefix is accepted)")
        mask_base64: str = Field(..., min_length=8, max_length=b64, description="the mask, the image's size: white (255) = paint, black = keep")
        class_: Union[int, str, None] = Field(None, alias="class", description="class name or index to paint (null: classes in turn)")
        method: Optional[Literal["repaint", "blend"]] = Field(None, description="repaint or blend; null: blend for mask-conditioned models, else repaint")
        num: int = Field(1, ge=1, le=settings.max_num, description="images")
        sampler: Sampler = Field(default_sampler, description="blend's sampler (repaint takes ddpm steps)")  # type: ignore[valid-type]
        steps: int = Field(min(25, settings.max_steps), ge=1, le=settings.max_steps, description="network steps per pass")
        resample: int = Field(5, ge=1, le=MAX_RESAMPLE, description="repaint: passes over each jump")
        jump: int = Field(5, ge=1, le=1000, description="repaint: steps per jump")
        cfg: Optional[float] = Field(None, ge=0.0, le=100.0, allow_inf_nan=False, description="classifier-free guidance scale; null: the model's")
        seed: int = Field(0, ge=0, le=2**63 - 1, description="image i uses seed + i")

    return InpaintRequest


class InpaintImage(BaseModel):
    index: int
    seed: int
    class_name: Optional[str]
    png_base64: str


class InpaintResult(BaseModel):
    model: str
    method: str
    seconds: float
    mask_png_base64: str = Field(description="the mask used, at the model's size (0 / 255)")
    images: List[InpaintImage]


def _bytes(text: str, field: str) -> bytes:
    if text.startswith("data:"):
        text = text.split(",", 1)[-1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, field, "is not valid base64") from None


def _open(data: bytes, field: str):
    """A Pillow image of at most MAX_SIDE pixels a side, checked on the header."""
    from PIL import Image

    try:
        im = Image.open(io.BytesIO(data))
        w, h = im.size
        if max(w, h) > MAX_SIDE:
            raise ApiError(422, field, f"is {w}x{h} pixels; at most {MAX_SIDE} a side")
        im.load()
        return im
    except ApiError:
        raise
    except Exception as e:  # Pillow raises many kinds for a bad file
        raise ApiError(422, field, f"is not a readable PNG or JPEG ({type(e).__name__})") from None


def decode_pair(pipe, req) -> tuple:
    """(image uint8 (S, S, C), mask bool (S, S)) at the model's size S, or a 422 naming the field."""
    from ..data.folder import load_image
    from ..data.masks import THRESHOLD, check_binary, resize_mask
    from ..errors import DataError

    raw_image, raw_mask = _bytes(req.image_base64, "image_base64"), _bytes(req.mask_base64, "mask_base64")
    im, m = _open(raw_image, "image_base64"), _open(raw_mask, "mask_base64")
    if im.size != m.size:
        raise ApiError(422, "mask_base64", f"is {m.size[0]}x{m.size[1]} but the image is {im.size[0]}x{im.size[1]}; draw the mask at the image's size")
    image = load_image(io.BytesIO(raw_image), pipe.image_size, pipe.channels)
    arr = np.asarray(m.convert("L"))
    try:
        check_binary(arr, "mask_base64")
    except DataError as e:
        raise ApiError(422, "mask_base64", str(e)) from None
    mask = resize_mask(arr > THRESHOLD, pipe.image_size)
    if not mask.any():
        raise ApiError(422, "mask_base64", "is empty: paint the region to fill white")
    return image, mask


def _png(arr: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


class Runner:
    """One request at a time; at most ``queue`` waiting (else 429 naming ``what`` waits)."""

    def __init__(self, queue: int, what: str = "inpainting"):
        self.queue, self.waiting, self.what = queue, 0, what
        self.lock = asyncio.Lock()

    async def run(self, fn, *args, **kwargs):
        if self.lock.locked() and self.waiting >= self.queue:
            raise ApiError(429, None, f"the {self.what} queue is full; retry after a moment", {"Retry-After": "1"})
        self.waiting += 1
        async with self.lock:
            self.waiting -= 1
            return await asyncio.to_thread(fn, *args, **kwargs)


def inpaint_router(state, check_token, with_token: bool) -> APIRouter:
    """The ``POST /v1/inpaint`` route of a server (``state``: its :class:`~difforge.serve.state.ServeState`)."""
    InpaintRequest = request_model(state.settings, state.samplers, state.default_sampler)
    runner = Runner(state.settings.queue)

    async def inpaint_route(req: InpaintRequest, request: Request):  # type: ignore[valid-type]
        name = state.model_name(req)
        if name not in state.models:
            raise ApiError(404, "model", f"unknown model {name!r}; this server has: {', '.join(state.names)}")
        request.state.model = name
        pipe = state.models[name]
        try:
            labels = pipe.labels_for(req.num, req.class_)
        except UserError as e:
            raise ApiError(422, "class", str(e)) from None
        if labels is not None and len(labels) > state.settings.max_num:
            raise ApiError(422, "num", f"{len(labels)} images; at most {state.settings.max_num} per request")
        image, mask = decode_pair(pipe, req)
        method = req.method or ("blend" if pipe.meta.get("inputs", {}).get("mask_conditioning") else "repaint")
        options: Dict[str, Any] = dict(method=method, steps=req.steps, cfg=req.cfg, seed=req.seed, resample=req.resample, jump=req.jump)
        if method == "blend":
            options["sampler"] = req.sampler
        t0 = time.perf_counter()
        try:
            out = await runner.run(pipe.inpaint, image, mask, req.num, req.class_, **options)
        except UserError as e:
            raise ApiError(422, None, str(e)) from None
        imgs = out.images.numpy()
        names = pipe.class_names
        return {"model": name, "method": method, "seconds": round(time.perf_counter() - t0, 3),
                "mask_png_base64": _png(out.mask.numpy().astype(np.uint8) * 255),
                "images": [{"index": i, "seed": req.seed + i, "png_base64": _png(imgs[i]),
                            "class_name": names[int(out.labels[i])] if out.labels is not None and names else None}
                           for i in range(len(imgs))]}

    api = APIRouter(prefix="/v1", dependencies=[Depends(check_token)] if with_token else [])
    api.add_api_route("/inpaint", inpaint_route, methods=["POST"], name="inpaint", response_model=InpaintResult,
                      summary="Paint a class into the white region of a mask on an image (RePaint, blend or a mask-conditioned model)",
                      responses={404: {"description": "unknown model"}, 422: {"description": "a field has a bad value; detail names it"},
                                 429: {"description": "the inpainting queue is full"}})
    return api


__all__ = ["MAX_SIDE", "PATH", "decode_pair", "inpaint_router"]
