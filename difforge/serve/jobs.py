"""Generation jobs: one worker thread and one bounded queue per model, and a bounded store of results.

Why a worker per model: on a CPU two generations of the same model at once only fight over the
cores (and share one network), so each model runs one job at a time; a full queue is refused at
once (the caller answers 429) instead of making clients wait without end. The event loop never
runs a network: it only submits jobs and awaits their futures.
"""

from __future__ import annotations

import asyncio
import io
import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..errors import CheckpointError, UserError

log = logging.getLogger("difforge.serve")


class QueueFull(Exception):
    """The model's queue holds as many waiting jobs as allowed."""


@dataclass
class GenerateArgs:
    """A validated request, in the Pipeline's terms."""

    num: int
    class_label: Any
    sampler: str
    steps: int
    cfg: float
    eta: Optional[float]
    seed: int
    total: int  # images the request makes (num x classes for class "all")
    prompt: Optional[str] = None  # text models (pipeline/text.py)
    negative_prompt: Optional[str] = None
    place_contrast: Optional[float] = None  # None: the default (pipeline/places.py)
    analogy: Optional[float] = None  # None: the default (pipeline/analogy.py)


@dataclass
class Job:
    model: str
    args: GenerateArgs
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: str = "queued"  # queued -> running -> done | failed
    progress: float = 0.0
    error: Optional[str] = None
    status: int = 200  # the HTTP status a failure maps to
    created: float = field(default_factory=time.time)
    started: Optional[float] = None
    finished: Optional[float] = None
    pngs: List[bytes] = field(default_factory=list)
    labels: Optional[List[int]] = None
    class_names: List[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _waiters: list = field(default_factory=list, repr=False)

    @property
    def finished_or_failed(self) -> bool:
        return self.state in ("done", "failed")

    @property
    def seconds(self) -> Optional[float]:
        return None if self.finished is None or self.started is None else self.finished - self.started

    def on_progress(self, done_images: int, total_images: int, step: int, num_steps: int, batch_size: int) -> None:
        """Pipeline.generate's callback: fraction of all network steps of all batches done."""
        batch = min(batch_size, total_images - done_images)
        frac = (done_images + batch * (step + 1) / max(num_steps, 1)) / max(total_images, 1)
        self.progress = max(self.progress, min(frac, 1.0))

    def _settle(self, state: str) -> None:
        with self._lock:
            self.state = state
            self.finished = time.time()
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            loop.call_soon_threadsafe(_resolve, fut)

    def succeed(self, pngs: List[bytes], labels, class_names: List[str]) -> None:
        self.pngs, self.labels, self.class_names = pngs, labels, class_names
        self.progress = 1.0
        self._settle("done")

    def fail(self, message: str, status: int = 500) -> None:
        self.error, self.status = message, status
        self._settle("failed")

    async def wait(self) -> "Job":
        """Await the end of the job from the event loop, without holding a thread."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self._lock:
            if self.finished_or_failed:
                return self
            self._waiters.append((loop, fut))
        await fut
        return self


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


def encode_png(images_nhwc_uint8) -> List[bytes]:
    from ..data.io import images_to_pil

    out = []
    for im in images_to_pil(images_nhwc_uint8):
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


class ModelWorker:
    """Runs one model's jobs one at a time, in submission order, on its own thread."""

    def __init__(self, name: str, pipe, queue_size: int, batch_size: int):
        self.name, self.pipe, self.batch_size = name, pipe, batch_size
        self.queue: "queue.Queue[Optional[Job]]" = queue.Queue(maxsize=queue_size)
        self.running: Optional[Job] = None
        self._thread = threading.Thread(target=self._loop, name=f"difforge-serve-{name}", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        return self.queue.qsize()

    def submit(self, job: Job) -> Job:
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"model {self.name!r} has {self.queue.maxsize} requests waiting; try again shortly") from None
        return job

    def stop(self, timeout: float = 5.0) -> None:
        """Fail the waiting jobs, let the running one finish, end the thread."""
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.fail("the server is shutting down", 503)
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:  # pragma: no cover - only if jobs raced in during shutdown
            pass
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            job = self.queue.get()
            if job is None:
                return
            self.running = job
            try:
                self._run(job)
            finally:
                self.running = None

    def _run(self, job: Job) -> None:
        a = job.args
        job.state, job.started = "running", time.time()
        try:
            out = self.pipe.generate(
                num=a.num,
                class_label=a.class_label,
                sampler=a.sampler,
                steps=a.steps,
                eta=a.eta,
                cfg=a.cfg,
                seed=a.seed,
                prompt=a.prompt,
                negative_prompt=a.negative_prompt,
                place_contrast=a.place_contrast,
                analogy=a.analogy,
                batch_size=self.batch_size,
                callback=lambda d, t, s, n: job.on_progress(d, t, s, n, self.batch_size),
            )
            pngs = encode_png(out.images.numpy())
        except CheckpointError as e:  # the model's fault (e.g. NaN/Inf samples), not the request's; paths stay in the log
            log.error("job %s model=%s failed: %s", job.id, self.name, e)
            job.fail(f"model {self.name!r} cannot make these images (NaN/Inf values or a damaged model); the server's log says why", 500)
        except UserError as e:
            job.fail(str(e), 422)
        except Exception as e:  # a bug: keep the server up, keep the traceback in the log
            log.exception("job %s model=%s failed", job.id, self.name)
            job.fail(f"internal error: {type(e).__name__}", 500)
        else:
            labels = out.labels.tolist() if out.labels is not None else None
            job.succeed(pngs, labels, list(out.class_names))
        log.info("job %s model=%s %s: %d images in %.2f s", job.id, self.name, job.state, len(job.pngs), job.seconds or 0.0)


class JobStore:
    """Jobs followed by id (``POST /v1/jobs``): finished ones kept for ``ttl`` s, at most ``keep``.

    Unfinished jobs are bounded by the queues; finished ones are dropped oldest first.
    """

    def __init__(self, keep: int = 32, ttl: float = 600.0):
        self.keep, self.ttl = keep, ttl
        self._jobs: "OrderedDict[str, Job]" = OrderedDict()
        self._lock = threading.Lock()

    def add(self, job: Job) -> None:
        with self._lock:
            self._jobs[job.id] = job
            self._trim()

    def get(self, job_id: str) -> Optional[Job]:
        with self._lock:
            self._trim()
            return self._jobs.get(job_id)

    def __len__(self) -> int:
        return len(self._jobs)

    def _trim(self) -> None:
        now = time.time()
        done = [j for j in self._jobs.values() if j.finished_or_failed]
        expired = {j.id for j in done if now - (j.finished or now) > self.ttl}
        done = [j for j in done if j.id not in expired]
        done.sort(key=lambda j: j.finished or 0.0)
        expired.update(j.id for j in done[: max(0, len(done) - self.keep)])
        for jid in expired:
            del self._jobs[jid]


def summary(workers: Dict[str, ModelWorker]) -> Dict[str, Any]:
    return {name: {"waiting": w.waiting, "running": w.running is not None} for name, w in workers.items()}
