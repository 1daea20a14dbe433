"""The HTTP API and the web page over :class:`difforge.pipeline.Pipeline`.

    GET  /v1/health            liveness + queue lengths
    GET  /v1/models            every model: name, size, channels, classes, samplers, defaults, limits
    POST /v1/generate          make images and answer when done: JSON with base64 PNGs, or a zip
    POST /v1/jobs              the same request, answered at once (202) with a job id
    POST /v1/inpaint           paint a class into a masked region of an uploaded image (serve/inpaint.py)
    POST /v1/upscale           upscale an uploaded image with a super-resolution model (serve/upscale.py); GET /v1/upscalers
    GET  /v1/jobs/{id}         state, progress 0..1, and the images once done
    GET  /v1/jobs/{id}/zip     the images of a finished job as a zip
    GET  /                     the web page;  /docs, /openapi.json: the API reference

Every request is validated (pydantic, then the model's classes and the image limit) before it is
queued; an error answers 4xx with ``{"detail": "FIELD: what is wrong", "field": FIELD}``. Each
model has one worker thread and a bounded queue (:mod:`difforge.serve.jobs`); a full queue
answers 429 at once. With a token, every ``/v1`` call and the API reference need ``Authorization:
Bearer TOKEN``, checked before the body is read; a body over the limit (1 MB) answers 413 unread.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Dict, Optional

from ..errors import UserError
from ..version import __version__
from .settings import ServeSettings

log = logging.getLogger("difforge.serve")

__all__ = ["ServeSettings", "create_app", "require_serve_extra"]


def require_serve_extra():
    try:
        import fastapi  # noqa: F401
        import pydantic  # noqa: F401
    except ImportError:
        raise UserError("serving needs FastAPI and uvicorn: pip install 'difforge[serve]'") from None


@contextlib.asynccontextmanager
async def _lifespan(app):
    yield
    await app.state.serve.stop()


async def _api_error(request, exc):
    from fastapi.responses import JSONResponse

    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def _validation_error(request, exc):
    from fastapi.responses import JSONResponse

    from .errors import one_line_validation_error

    err = one_line_validation_error(exc)
    return JSONResponse(err.body(), status_code=err.status)


async def _log_request(request, call_next):
    """One log line per request: method, path, model, status, time (job polls at DEBUG)."""
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


def create_app(models: Dict[str, Any], settings: Optional[ServeSettings] = None):
    """A FastAPI app serving ``models`` (``{name: Pipeline}``, loaded once by the caller)."""
    require_serve_extra()
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.staticfiles import StaticFiles

    from . import inpaint, routes, upscale
    from .errors import ApiError
    from .limits import Guard
    from .schemas import request_model
    from .state import ServeState

    models, upscalers = upscale.split_upscalers(models)  # SR models answer /v1/upscale (serve/upscale.py), not /v1/generate
    state = ServeState(models, settings or ServeSettings(), upscalers_only=bool(upscalers))
    app = FastAPI(
        title="difforge",
        version=__version__,
        summary="Generate images from difforge diffusion models.",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        lifespan=_lifespan,
    )
    app.state.serve = state
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    s = state.settings  # the token and the body limit before any body is read; the request log around them
    app.add_middleware(Guard, token=s.token, max_body_bytes=s.max_body_bytes, max_upload_bytes=s.max_upload_bytes,
                       upload_paths=(*s.upload_paths, inpaint.PATH, upscale.PATH))
    app.middleware("http")(_log_request)

    GenerateRequest = request_model(state.settings, state.samplers, state.names, state.default_sampler)
    app.include_router(routes.api_router(GenerateRequest, with_token=state.settings.token is not None))
    app.include_router(inpaint.inpaint_router(state, routes.check_token, with_token=state.settings.token is not None))
    app.include_router(upscale.upscale_router(upscalers, state.settings, routes.check_token, with_token=state.settings.token is not None))
    app.add_api_route("/", routes.page, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=routes.STATIC), name="static")
    return app
