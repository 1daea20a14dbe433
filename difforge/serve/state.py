"""What one server holds: its settings, its models, a worker per model and the job store.

Stored on ``app.state.serve``; the routes (:mod:`difforge.serve.routes`) read it from the request.
Everything that can be checked before a request is queued is checked here (:meth:`ServeState.prepare`).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from dataclasses import asdict
from typing import Any, Dict, List

from ..errors import ConfigError, UserError
from ..pipeline.config import interval_json
from .errors import ApiError
from .jobs import GenerateArgs, Job, JobStore, ModelWorker, QueueFull, summary
from .models import is_model_name
from .settings import SAMPLING, ServeSettings


def takes_option(sampler: str, option: str) -> bool:
    """True when the sampler ``sampler`` accepts the keyword ``option`` (e.g. ``eta``)."""
    from ..diffusion.samplers import get_sampler

    params = inspect.signature(get_sampler(sampler)).parameters
    return option in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


class ServeState:
    """The models (``{name: Pipeline}``, loaded once by the caller), their workers and the jobs."""

    def __init__(self, models: Dict[str, Any], settings: ServeSettings, upscalers_only: bool = False):
        """``upscalers_only``: the server has super-resolution models and no generating one, so
        ``models`` may be empty (/v1/generate then answers that it has no model)."""
        from ..diffusion.samplers import available

        if not models and not upscalers_only:
            raise ConfigError("create_app needs at least one model")
        bad = [n for n in models if not is_model_name(n)]
        if bad:
            raise ConfigError(f"model names must be plain names (letters, digits, _ . -), got {bad}")
        self.models, self.settings = models, settings
        self.names: List[str] = list(models)
        self.samplers: List[str] = available()
        self.with_eta = [n for n in self.samplers if takes_option(n, "eta")]
        self.default_sampler = SAMPLING.sampler if SAMPLING.sampler in self.samplers else self.samplers[0]
        self.workers: Dict[str, ModelWorker] = {}
        self.jobs = JobStore(settings.keep_jobs, settings.job_ttl)
        self._lock = threading.Lock()

    # -- workers ---------------------------------------------------------------------------------
    def worker(self, name: str) -> ModelWorker:
        with self._lock:  # started on first use, so an app that never serves holds no threads
            if name not in self.workers:
                self.workers[name] = ModelWorker(name, self.models[name], self.settings.queue, self.settings.batch_size)
            return self.workers[name]

    def submit(self, job: Job) -> Job:
        try:
            return self.worker(job.model).submit(job)
        except QueueFull as e:
            raise ApiError(429, None, str(e), {"Retry-After": "1"}) from None

    async def stop(self) -> None:
        """Stop every started worker (waiting jobs fail, running ones finish)."""
        with self._lock:
            running = list(self.workers.values())
        await asyncio.gather(*(asyncio.to_thread(w.stop) for w in running))

    def busy(self) -> Dict[str, Dict[str, Any]]:
        """Per model: jobs waiting and whether one is running."""
        idle = {"waiting": 0, "running": False}
        with self._lock:
            busy = summary(self.workers)
        return {n: busy.get(n, idle) for n in self.names}

    # -- what a request may ask --------------------------------------------------------------------
    def defaults(self, pipe=None) -> Dict[str, Any]:
        """What a request leaves out becomes; ``pipe``: a model's own (its guidance scale is measured per image size)."""
        s = self.settings
        return {"num": s.default_num, "class": None, "sampler": self.default_sampler, "steps": s.default_steps,
                "cfg": pipe.default_cfg if pipe is not None else None,
                "cfg_interval": interval_json(pipe.default_cfg_interval) if pipe is not None else "auto",  # the model's (not a request field)
                "eta": SAMPLING.eta, "seed": 0, "format": "png-base64"}

    def model_info(self, name: str) -> Dict[str, Any]:
        pipe = self.models[name]
        return {
            "name": name,
            "image_size": pipe.output_size,  # a cascade's base is upscaled by its linked upsampler (pipeline/upscale.py)
            "channels": pipe.channels,
            "classes": list(pipe.class_names),
            "conditional": bool(pipe.class_names),
            "text": bool(pipe.meta.get("text")),
            "network": pipe.meta["network"]["name"],
            "parameters": sum(p.numel() for p in pipe.net.parameters()),
            "samplers": self.samplers,
            "defaults": self.defaults(pipe),
        }

    def limits(self) -> Dict[str, int]:
        s = self.settings
        return {"max_num": s.max_num, "max_steps": s.max_steps, "queue": s.queue}

    def model_name(self, req) -> str:
        """The model a request names; with one model on the server, that one by default."""
        if req.model is not None:
            return req.model
        if not self.models:
            raise ApiError(404, "model", "this server has no generating model, only upscalers: POST /v1/upscale (GET /v1/upscalers)")
        if len(self.models) != 1:
            raise ApiError(422, "model", f"this server has {len(self.models)} models; choose one of: {', '.join(self.names)}")
        return self.names[0]

    def prepare(self, req, name: str) -> Job:
        """Everything checkable before queueing: the model, the class, the total image count."""
        if name not in self.models:
            raise ApiError(404, "model", f"unknown model {name!r}; this server has: {', '.join(self.names)}")
        pipe = self.models[name]
        try:
            labels = pipe.labels_for(req.num, req.class_)
        except UserError as e:
            raise ApiError(422, "class", str(e)) from None
        try:  # a prompt for a model without text, or words its encoder never saw: one line before queueing
            pipe.with_prompts(req.prompt, req.negative_prompt, 1, None, req.place_contrast, req.analogy)
        except UserError as e:
            raise ApiError(422, "prompt", str(e)) from None
        if req.eta is not None and req.sampler not in self.with_eta:
            raise ApiError(422, "eta", f"sampler {req.sampler} does not take eta; these do: {', '.join(self.with_eta) or 'none'}")
        total = len(labels) if labels is not None else req.num
        if total > self.settings.max_num:
            raise ApiError(422, "num", f"{req.num} images x {pipe.num_classes} classes = {total} images; at most {self.settings.max_num} per request")
        args = GenerateArgs(num=req.num, class_label=req.class_, sampler=req.sampler, steps=req.steps, cfg=req.cfg, eta=req.eta, seed=req.seed, total=total,
                            prompt=req.prompt, negative_prompt=req.negative_prompt, place_contrast=req.place_contrast, analogy=req.analogy)
        return Job(model=name, args=args)

    def find_job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            s = self.settings
            raise ApiError(404, "id", f"no job {job_id[:40]!r} (finished jobs are kept {s.job_ttl:.0f} s, at most {s.keep_jobs})")
        return job


def job_settings(job: Job) -> Dict[str, Any]:
    """A job's request, with the API's field names."""
    a = asdict(job.args)
    a["class"] = a.pop("class_label")
    return a
