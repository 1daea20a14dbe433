"""The API's request and response bodies (pydantic), as /docs shows them.

The request's bounds are the server's (``max_num``, ``max_steps``, its samplers and models), so
:func:`request_model` builds it for one server; the responses are the same for every server.
"""

# No `from __future__ import annotations`: pydantic and FastAPI read these annotations at runtime.
from typing import Any, Dict, List, Literal, Optional, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .models import is_model_name
from ..pipeline.config import cfg_defaults_text
from .settings import SAMPLING, ServeSettings


def request_model(settings: ServeSettings, samplers: Sequence[str], names: Sequence[str], default_sampler: str):
    """The ``GenerateRequest`` body of a server: its limits, samplers and model names."""
    Sampler = Literal[tuple(samplers)]  # type: ignore[valid-type]

    class GenerateRequest(BaseModel):
        """What to generate. Image i uses seed ``seed + i``, so a request is reproducible."""

        model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

        model: Optional[str] = Field(None, description="a model name from GET /v1/models (optional when the server has one model)", examples=list(names[:1]))
        class_: Union[int, str, None] = Field(None, alias="class", description='class name or index, "all" (num images of every class), or null (classes in turn)')
        num: int = Field(settings.default_num, ge=1, le=settings.max_num, description="images (per class with class \"all\")")
        sampler: Sampler = Field(default_sampler, description="sampler name")  # type: ignore[valid-type]
        steps: int = Field(settings.default_steps, ge=1, le=settings.max_steps, description="network steps per image")
        cfg: Optional[float] = Field(None, ge=0.0, le=100.0, allow_inf_nan=False,
                                     description=f"classifier-free guidance scale (1 = off); null: the model's ({cfg_defaults_text()}, GET /v1/models)")
        eta: Optional[float] = Field(SAMPLING.eta, ge=0.0, le=1.0, allow_inf_nan=False, description="DDIM noise: 0 deterministic .. 1 DDPM-like; null: the sampler's default")
        seed: int = Field(0, ge=0, le=2**63 - 1, description="image i uses seed + i")
        format: Literal["png-base64", "zip"] = Field("png-base64", description="POST /v1/generate answers JSON with base64 PNGs, or a zip of PNGs")
        prompt: Optional[str] = Field(None, max_length=1000, description="text models (\"text\": true in GET /v1/models): describe the images; parts joined "
                                      "by AND (each with an optional :weight) compose a combination the captions never had")
        negative_prompt: Optional[str] = Field(None, max_length=1000, description="text models: what guidance steers away from (default: the empty caption)")
        place_contrast: Optional[float] = Field(None, ge=0.0, le=100.0, allow_inf_nan=False,
                                                description="text models: how strongly a prompt that names a place ('at the top left') is steered "
                                                "away from the places beside it (0: off); null: the default")
        analogy: Optional[float] = Field(None, ge=0.0, le=1.0, allow_inf_nan=False,
                                         description="text models: how much of a prompt whose combination the captions never had is composed "
                                         "from three they had (crack on steel + scratch on wood - scratch on steel; 0: off); null: the default, 1")

        @field_validator("model")
        @classmethod
        def _plain_name(cls, v):
            if v is not None and not is_model_name(v):
                raise ValueError(f"{v[:60]!r} is not a model name (paths are not accepted); use a name from GET /v1/models")
            return v

    return GenerateRequest


class Image(BaseModel):
    index: int
    seed: int
    class_index: Optional[int]
    class_name: Optional[str]
    png_base64: str


class GenerateResult(BaseModel):
    model: str
    seconds: float
    settings: Dict[str, Any]
    images: List[Image]


class JobInfo(BaseModel):
    id: str
    model: str
    state: Literal["queued", "running", "done", "failed"]
    progress: float = Field(description="0..1, from the sampler's steps")
    error: Optional[str] = None
    seconds: Optional[float] = Field(None, description="generation time, once finished")
    settings: Dict[str, Any]
    images: Optional[List[Image]] = Field(None, description="once done")
    zip_url: Optional[str] = Field(None, description="once done")


class ModelInfo(BaseModel):
    name: str
    image_size: int
    channels: int
    classes: List[str]
    conditional: bool
    text: bool = False  # trained with captions: /v1/generate takes prompt
    network: str
    parameters: int
    samplers: List[str]
    defaults: Dict[str, Any]


class ModelList(BaseModel):
    models: List[ModelInfo]
    limits: Dict[str, int]
    auth: bool


class Health(BaseModel):
    status: str
    version: str
    models: Dict[str, Dict[str, Any]]
    jobs: int
