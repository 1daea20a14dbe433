"""The ``/v1`` routes and the page: plain functions over the :class:`ServeState` on ``app.state.serve``.

Only the two routes that take a request body are bound per server (:func:`api_router`), because
that body's bounds are the server's own (see :mod:`difforge.serve.schemas`).
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures at runtime.
import base64
import hmac
import io
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional

from fastapi import APIRouter, Depends, Request, Security
from fastapi.responses import FileResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..version import __version__
from .errors import ApiError
from .jobs import Job
from .schemas import GenerateResult, Health, JobInfo, ModelList
from .state import ServeState, job_settings

STATIC = Path(__file__).parent / "static"
PAGE_CSP = "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'"

TOO_MANY = {429: {"description": "the model's queue is full; retry after a moment"}}
ERRORS = {401: {"description": "token missing or wrong"}, 404: {"description": "unknown model"}, 422: {"description": "a field has a bad value; detail names it"}}
NO_JOB = {404: {"description": "unknown or expired job"}}

bearer = HTTPBearer(auto_error=False, description="the token the server was started with (--token)")


def state_of(request: Request) -> ServeState:
    return request.app.state.serve


def check_token(request: Request, cred: Optional[HTTPAuthorizationCredentials] = Security(bearer)) -> None:
    token = state_of(request).settings.token
    if token is None:
        return
    if cred is None or not hmac.compare_digest(cred.credentials.encode(), token.encode()):
        raise ApiError(401, None, "a valid token is needed: send the header Authorization: Bearer TOKEN", {"WWW-Authenticate": "Bearer"})


# -- answers -----------------------------------------------------------------------------------
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


def job_info(job: Job) -> Dict[str, Any]:
    done = job.state == "done"
    return {"id": job.id, "model": job.model, "state": job.state, "progress": round(job.progress, 4), "error": job.error,
            "seconds": None if job.seconds is None else round(job.seconds, 3), "settings": job_settings(job),
            "images": images(job) if done else None,
            "zip_url": f"/v1/jobs/{job.id}/zip" if done else None}


def submit(req, request: Request) -> Job:
    state = state_of(request)
    name = state.model_name(req)
    request.state.model = name  # for the request log
    return state.submit(state.prepare(req, name))


def find_job(job_id: str, request: Request) -> Job:
    job = state_of(request).find_job(job_id)
    request.state.model = job.model
    return job


# -- routes ------------------------------------------------------------------------------------
def health(request: Request):
    state = state_of(request)
    return {"status": "ok", "version": __version__, "models": state.busy(), "jobs": len(state.jobs)}


def list_models(request: Request):
    state = state_of(request)
    return {"models": [state.model_info(n) for n in state.names], "auth": state.settings.token is not None, "limits": state.limits()}


async def generate(req, request: Request):
    job = submit(req, request)
    await job.wait()
    if job.state == "failed":
        raise ApiError(job.status, None, job.error or "generation failed")
    if req.format == "zip":
        return zip_response(job)
    return {"model": job.model, "seconds": round(job.seconds or 0.0, 3), "settings": job_settings(job), "images": images(job)}


def create_job(req, request: Request):
    job = submit(req, request)
    state_of(request).jobs.add(job)
    return job_info(job)


def get_job(job_id: str, request: Request):
    return job_info(find_job(job_id, request))


def get_job_zip(job_id: str, request: Request):
    job = find_job(job_id, request)
    if job.state != "done":
        raise ApiError(409, "id", f"job {job.id} is {job.state}" + (f": {job.error}" if job.error else ""))
    return zip_response(job)


def page():
    return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"})


def api_router(GenerateRequest, with_token: bool) -> APIRouter:
    """The ``/v1`` routes, with this server's request body (``GenerateRequest``)."""

    async def generate_route(req: GenerateRequest, request: Request):  # type: ignore[valid-type]
        return await generate(req, request)

    def create_job_route(req: GenerateRequest, request: Request):  # type: ignore[valid-type]
        return create_job(req, request)

    api = APIRouter(prefix="/v1", dependencies=[Depends(check_token)] if with_token else [])
    api.add_api_route("/health", health, methods=["GET"], response_model=Health, summary="Liveness and queue lengths")
    api.add_api_route("/models", list_models, methods=["GET"], response_model=ModelList, summary="The models this server offers")
    api.add_api_route("/generate", generate_route, methods=["POST"], name="generate", summary="Generate images and answer when they are done",
                      responses={200: {"model": GenerateResult, "content": {"application/zip": {}}, "description": "JSON with base64 PNGs, or a zip (format)"},
                                 **ERRORS, **TOO_MANY})
    api.add_api_route("/jobs", create_job_route, methods=["POST"], name="create_job", status_code=202, response_model=JobInfo,
                      summary="Queue a generation; follow it with GET /v1/jobs/{id}", responses={**ERRORS, **TOO_MANY})
    api.add_api_route("/jobs/{job_id}", get_job, methods=["GET"], response_model=JobInfo,
                      summary="A job's state and progress; its images once done", responses=NO_JOB)
    api.add_api_route("/jobs/{job_id}/zip", get_job_zip, methods=["GET"], summary="A finished job's images as a zip",
                      responses={200: {"content": {"application/zip": {}}}, **NO_JOB, 409: {"description": "not finished"}})
    return api
