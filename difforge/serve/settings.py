"""A server's limits and defaults: every one bounded, so no request can run away."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from ..errors import ConfigError
from ..pipeline import SampleConfig

SAMPLING = SampleConfig()  # the sampling defaults (sampler, steps, cfg, eta, batch size) come from here only


@dataclass
class ServeSettings:
    """Limits and defaults of a server."""

    max_num: int = 64  # images per request: num, or num x classes for class "all"
    max_steps: int = 1000  # network steps per image
    queue: int = 8  # requests waiting per model, besides the one running
    token: Optional[str] = None  # if set, every /v1 call and /docs, /openapi.json need Authorization: Bearer TOKEN
    keep_jobs: int = 32  # finished jobs kept for GET /v1/jobs/{id} ...
    job_ttl: float = 600.0  # ... for at most this many seconds
    batch_size: int = SAMPLING.batch_size  # images per network batch
    default_num: int = 4
    default_steps: int = SAMPLING.steps
    max_body_bytes: int = 1 << 20  # a JSON request body (a generate request is < 1 kB); larger: 413 before reading it
    max_upload_bytes: int = 64 << 20  # the body limit of the paths in upload_paths (routes that take files)
    upload_paths: Tuple[str, ...] = ()

    def __post_init__(self):
        for name in ("max_num", "max_steps", "queue", "keep_jobs", "batch_size", "default_num", "default_steps",
                     "max_body_bytes", "max_upload_bytes"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a whole number >= 1, got {v!r}")
        if not self.job_ttl > 0:
            raise ConfigError(f"job_ttl must be > 0 seconds, got {self.job_ttl!r}")
        if self.token is not None and not self.token.strip():
            raise ConfigError("token must not be empty")
        self.default_num = min(self.default_num, self.max_num)
        self.default_steps = min(self.default_steps, self.max_steps)
