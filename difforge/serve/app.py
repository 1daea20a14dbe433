"""The HTTP API and the web page over :class:`difforge.pipeline.Pipeline`.

    GET  /v1/health            liveness + queue lengths
    GET  /v1/models            every model: name, size, channels, classes, samplers, defaults, limits
    POST /v1/generate          make images and answer when done: JSON with base64 PNGs, or a zip
    POST /v1/jobs              the same request, answered at once (202) with a job id
    GET  /v1/jobs/{id}         state, progress 0..1, and the images once done
    GET  /v1/jobs/{id}/zip     the images of a finished job as a zip
    GET  /                     the web page;  /docs, /openapi.json: the API reference

Every request is validated (pydantic, then the model's classes and the image limit) before it is
queued; an error answers 4xx with ``{"detail": "FIELD: what is wrong", "field": FIELD}``. Each
model has one worker thread and a bounded queue (:mod:`difforge.serve.jobs`); a full queue
answers 429 at once. With a token, every ``/v1`` call needs ``Authorization: Bearer TOKEN``.
"""

# No `from __future__ import annotations`: FastAPI must see the request classes built in create_app.
import base64
import contextlib
import hmac
import io
import logging
import re
import threading
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Union

from ..errors import ConfigError
from .jobs import GenerateArgs, Job, JobStore, ModelWorker, QueueFull, summary
from .models import is_model_name

log = logging.getLogger("difforge.serve")

STATIC = Path(__file__).parent / "static"
PAGE_CSP = "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'"


@dataclass
class ServeSettings:
    """Limits and defaults of a server; every one is bounded so no request can run away."""

    max_num: int = 64  # images per request: num, or num x classes for class "all"
    max_steps: int = 1000  # network steps per image
    queue: int = 8  # requests waiting per model, besides the one running
    token: Optional[str] = None  # if set, every /v1 call needs Authorization: Bearer TOKEN
    keep_jobs: int = 32  # finished jobs kept for GET /v1/jobs/{id} ...
    job_ttl: float = 600.0  # ... for at most this many seconds
    batch_size: int = 16  # images per network batch
    default_num: int = 4
    default_steps: int = 50

    def __post_init__(self):
        for name in ("max_num", "max_steps", "queue", "keep_jobs", "batch_size", "default_num", "default_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a whole number >= 1, got {v!r}")
        if not self.job_ttl > 0:
            raise ConfigError(f"job_ttl must be > 0 seconds, got {self.job_ttl!r}")
        if self.token is not None and not self.token.strip():
            raise ConfigError("token must not be empty")
        self.default_num = min(self.default_num, self.max_num)
        self.default_steps = min(self.default_steps, self.max_steps)


class ApiError(Exception):
    """An answer other than 200: the status, the field at fault (if one) and a one-line message."""

    def __init__(self, status: int, field: Optional[str], message: str, headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.status, self.field, self.message, self.headers = status, field, message, headers

    def body(self) -> Dict[str, Any]:
        return {"detail": f"{self.field}: {self.message}" if self.field else self.message, "field": self.field}


def require_serve_extra():
    try:
        import fastapi  # noqa: F401
        import pydantic  # noqa: F401
    except ImportError:
        from ..errors import UserError

        raise UserError("serving needs FastAPI and uvicorn: pip install 'difforge[serve]'") from None


def _schemas(settings: ServeSettings, samplers: List[str], names: List[str]):
    """Request/response models; the limits are this server's, so /docs shows the real bounds."""
    from pydantic import BaseModel, ConfigDict, Field, field_validator

    Sampler = Literal[tuple(samplers)]  # type: ignore[valid-type]
    default_sampler = "ddim" if "ddim" in samplers else samplers[0]

    class GenerateRequest(BaseModel):
        """What to generate. Image i uses seed ``seed + i``, so a request is reproducible."""

        model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

        model: Optional[str] = Field(None, description="a model name from GET /v1/models (optional when the server has one model)", examples=names[:1])
        class_: Union[int, str, None] = Field(None, alias="class", description='class name or index, "all" (num images of every class), or null (classes in turn)')
        num: int = Field(settings.default_num, ge=1, le=settings.max_num, description="images (per class with class \"all\")")
        sampler: Sampler = Field(default_sampler, description="sampler name")  # type: ignore[valid-type]
        steps: int = Field(settings.default_steps, ge=1, le=settings.max_steps, description="network steps per image")
        cfg: float = Field(3.0, ge=0.0, le=100.0, allow_inf_nan=False, description="classifier-free guidance scale (1 = off)")
        eta: Optional[float] = Field(None, ge=0.0, le=1.0, allow_inf_nan=False, description="DDIM noise: 0 deterministic .. 1 DDPM-like; null: the sampler's default")
        seed: int = Field(0, ge=0, le=2**63 - 1, description="image i uses seed + i")
        format: Literal["png-base64", "zip"] = Field("png-base64", description="POST /v1/generate answers JSON with base64 PNGs, or a zip of PNGs")

        @field_validator("model")
        @classmethod
        def _plain_name(cls, v):
            if v is not None and not is_model_name(v):
                raise ValueError(f"{v[:60]!r} is not a model name (paths are not accepted); use a name from GET /v1/models")
            return v

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

    return GenerateRequest, GenerateResult, JobInfo, ModelList, Health, default_sampler


def _one_line_validation_error(exc) -> ApiError:
    """FastAPI's list of validation errors -> the first, as ``field: message (got value)``."""
    errs = exc.errors()
    if not errs:
        return ApiError(422, "body", "invalid request")

    def field_of(err) -> str:  # the request's fields are flat; deeper parts of a loc name union members
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        return {"class_": "class"}.get(loc[0], loc[0]) if loc else "body"

    e, field = errs[0], field_of(errs[0])
    msg = re.sub(r"^Value error, ", "", str(e.get("msg", "invalid value")))
    if field == "class":  # a union: its members' messages would only confuse
        msg = 'must be a class name, a class index, "all" or null'
    if e.get("type") == "json_invalid":
        field, msg = "body", f"not valid JSON ({msg})"
    got = e.get("input")
    if e.get("type") not in ("missing", "json_invalid", "value_error") and isinstance(got, (int, float, str, bool, type(None))):
        r = repr(got)
        msg += f" (got {r if len(r) <= 40 else r[:37] + '...'})"
    others = sorted({field_of(x) for x in errs} - {field})
    more = f" [also: {', '.join(others)}]" if others else ""
    return ApiError(422, field, msg.replace("\n", " ") + more)


def _takes_option(sampler: str, option: str) -> bool:
    import inspect

    from ..diffusion.samplers import get_sampler

    params = inspect.signature(get_sampler(sampler)).parameters
    return option in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def create_app(models: Dict[str, Any], settings: Optional[ServeSettings] = None):
    """A FastAPI app serving ``models`` (``{name: Pipeline}``, loaded once by the caller)."""
    require_serve_extra()
    from fastapi import APIRouter, Depends, FastAPI, Request, Security
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from fastapi.staticfiles import StaticFiles

    from .. import __version__
    from ..diffusion.samplers import available

    if not models:
        raise ConfigError("create_app needs at least one model")
    bad = [n for n in models if not is_model_name(n)]
    if bad:
        raise ConfigError(f"model names must be plain names (letters, digits, _ . -), got {bad}")
    settings = settings or ServeSettings()
    samplers = available()
    with_eta = [n for n in samplers if _takes_option(n, "eta")]
    names = list(models)
    GenerateRequest, GenerateResult, JobInfo, ModelList, Health, default_sampler = _schemas(settings, samplers, names)
    workers: Dict[str, ModelWorker] = {}
    store = JobStore(settings.keep_jobs, settings.job_ttl)

    lock = threading.Lock()

    def worker(name: str) -> ModelWorker:
        with lock:  # started on first use, so an app that never serves holds no threads
            if name not in workers:
                workers[name] = ModelWorker(name, models[name], settings.queue, settings.batch_size)
            return workers[name]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        import asyncio

        with lock:
            running = list(workers.values())
        await asyncio.gather(*(asyncio.to_thread(w.stop) for w in running))

    app = FastAPI(
        title="difforge",
        version=__version__,
        summary="Generate images from difforge diffusion models.",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        lifespan=lifespan,
    )
    app.state.settings, app.state.workers, app.state.jobs = settings, workers, store

    # -- errors and request log --------------------------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        err = _one_line_validation_error(exc)
        return JSONResponse(err.body(), status_code=err.status)

    @app.middleware("http")
    async def _log_request(request: Request, call_next):
        t0 = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            model = getattr(request.state, "model", None)
            polling = request.method == "GET" and request.url.path.startswith("/v1/jobs/") and status == 200
            log.log(logging.DEBUG if polling else logging.INFO, "%s %s%s %d %.1f ms", request.method, request.url.path,
                    f" model={model}" if model else "", status, (time.perf_counter() - t0) * 1000)

    # -- auth ----------------------------------------------------------------------------------
    bearer = HTTPBearer(auto_error=False, description="the token the server was started with (--token)")

    def check_token(cred: Optional[HTTPAuthorizationCredentials] = Security(bearer)) -> None:
        token = settings.token
        if token is None:
            return
        if cred is None or not hmac.compare_digest(cred.credentials.encode(), token.encode()):
            raise ApiError(401, None, "a valid token is needed: send the header Authorization: Bearer TOKEN", {"WWW-Authenticate": "Bearer"})

    api = APIRouter(prefix="/v1", dependencies=[Depends(check_token)] if settings.token else [])

    # -- helpers -------------------------------------------------------------------------------
    def defaults() -> Dict[str, Any]:
        return {"num": settings.default_num, "class": None, "sampler": default_sampler, "steps": settings.default_steps,
                "cfg": 3.0, "eta": None, "seed": 0, "format": "png-base64"}

    def model_info(name: str) -> Dict[str, Any]:
        pipe = models[name]
        return {
            "name": name,
            "image_size": pipe.image_size,
            "channels": pipe.channels,
            "classes": list(pipe.class_names),
            "conditional": bool(pipe.class_names),
            "network": pipe.meta["network"]["name"],
            "parameters": sum(p.numel() for p in pipe.net.parameters()),
            "samplers": samplers,
            "defaults": defaults(),
        }

    def prepare(req, request: Request) -> Job:
        """Everything checkable before queueing: the model, the class, the total image count."""
        name = req.model
        if name is None:
            if len(models) != 1:
                raise ApiError(422, "model", f"this server has {len(models)} models; choose one of: {', '.join(names)}")
            name = names[0]
        request.state.model = name
        if name not in models:
            raise ApiError(404, "model", f"unknown model {name!r}; this server has: {', '.join(names)}")
        pipe = models[name]
        from ..errors import UserError

        try:
            labels = pipe.labels_for(req.num, req.class_)
        except UserError as e:
            raise ApiError(422, "class", str(e)) from None
        if req.eta is not None and req.sampler not in with_eta:
            raise ApiError(422, "eta", f"sampler {req.sampler} does not take eta; these do: {', '.join(with_eta) or 'none'}")
        total = len(labels) if labels is not None else req.num
        if total > settings.max_num:
            raise ApiError(422, "num", f"{req.num} images x {pipe.num_classes} classes = {total} images; at most {settings.max_num} per request")
        args = GenerateArgs(num=req.num, class_label=req.class_, sampler=req.sampler, steps=req.steps, cfg=req.cfg, eta=req.eta, seed=req.seed, total=total)
        return Job(model=name, args=args)

    def submit(job: Job) -> Job:
        try:
            return worker(job.model).submit(job)
        except QueueFull as e:
            raise ApiError(429, None, str(e), {"Retry-After": "1"}) from None

    def job_settings(job: Job) -> Dict[str, Any]:
        a = asdict(job.args)
        a["class"] = a.pop("class_label")
        return a

    def images(job: Job) -> List[Dict[str, Any]]:
        out = []
        for i, png in enumerate(job.pngs):
            k = job.labels[i] if job.labels is not None else None
            out.append({"index": i, "seed": job.args.seed + i, "class_index": k,
                        "class_name": job.class_names[k] if k is not None and job.class_names else None,
                        "png_base64": base64.b64encode(png).decode("ascii")})
        return out

    def zip_response(job: Job) -> Response:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            for im, png in zip(images(job), job.pngs):
                cls = f"_{im['class_name']}" if im["class_name"] else ""
                z.writestr(f"{im['index']:04d}{cls}_seed{im['seed']}.png", png)
        fname = f"difforge-{job.model}-seed{job.args.seed}.zip"
        return Response(buf.getvalue(), media_type="application/zip", headers={"Content-Disposition": f'attachment; filename="{fname}"'})

    def job_info(job: Job, with_images: bool = True) -> Dict[str, Any]:
        done = job.state == "done"
        return {"id": job.id, "model": job.model, "state": job.state, "progress": round(job.progress, 4), "error": job.error,
                "seconds": None if job.seconds is None else round(job.seconds, 3), "settings": job_settings(job),
                "images": images(job) if done and with_images else None,
                "zip_url": f"/v1/jobs/{job.id}/zip" if done else None}

    def find_job(job_id: str) -> Job:
        job = store.get(job_id)
        if job is None:
            raise ApiError(404, "id", f"no job {job_id[:40]!r} (finished jobs are kept {settings.job_ttl:.0f} s, at most {settings.keep_jobs})")
        return job

    too_many = {429: {"description": "the model's queue is full; retry after a moment"}}
    errors = {401: {"description": "token missing or wrong"}, 404: {"description": "unknown model"}, 422: {"description": "a field has a bad value; detail names it"}}

    # -- API -------------------------------------------------------------------------------
    @api.get("/health", response_model=Health, summary="Liveness and queue lengths")
    def health():
        idle = {"waiting": 0, "running": False}
        with lock:
            busy = summary(workers)
        return {"status": "ok", "version": __version__, "models": {n: busy.get(n, idle) for n in names}, "jobs": len(store)}

    @api.get("/models", response_model=ModelList, summary="The models this server offers")
    def list_models():
        return {"models": [model_info(n) for n in names], "auth": settings.token is not None,
                "limits": {"max_num": settings.max_num, "max_steps": settings.max_steps, "queue": settings.queue}}

    @api.post("/generate", summary="Generate images and answer when they are done",
              responses={200: {"model": GenerateResult, "content": {"application/zip": {}}, "description": "JSON with base64 PNGs, or a zip (format)"}, **errors, **too_many})
    async def generate(req: GenerateRequest, request: Request):  # type: ignore[valid-type]
        job = submit(prepare(req, request))
        await job.wait()
        if job.state == "failed":
            raise ApiError(job.status, None, job.error or "generation failed")
        if req.format == "zip":
            return zip_response(job)
        return {"model": job.model, "seconds": round(job.seconds or 0.0, 3), "settings": job_settings(job), "images": images(job)}

    @api.post("/jobs", status_code=202, response_model=JobInfo, summary="Queue a generation; follow it with GET /v1/jobs/{id}",
              responses={**errors, **too_many})
    def create_job(req: GenerateRequest, request: Request):  # type: ignore[valid-type]
        job = submit(prepare(req, request))
        store.add(job)
        return job_info(job)

    @api.get("/jobs/{job_id}", response_model=JobInfo, summary="A job's state and progress; its images once done",
             responses={404: {"description": "unknown or expired job"}})
    def get_job(job_id: str, request: Request):
        job = find_job(job_id)
        request.state.model = job.model
        return job_info(job)

    @api.get("/jobs/{job_id}/zip", summary="A finished job's images as a zip",
             responses={200: {"content": {"application/zip": {}}}, 404: {"description": "unknown or expired job"}, 409: {"description": "not finished"}})
    def get_job_zip(job_id: str, request: Request):
        job = find_job(job_id)
        request.state.model = job.model
        if job.state != "done":
            raise ApiError(409, "id", f"job {job.id} is {job.state}" + (f": {job.error}" if job.error else ""))
        return zip_response(job)

    app.include_router(api)

    # -- the page ------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
