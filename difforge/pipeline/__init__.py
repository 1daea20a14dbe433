"""Pipeline: a model file in, images out (see :mod:`difforge.pipeline.core`).

- ``core``: :class:`Pipeline` (loading, the denoiser, the batch core, ``generate``)
- ``config``: :class:`SampleConfig`, every sampling default once; sampler option checks
- ``trajectory`` / ``interpolate``: the other modes, thin functions over the batch core
- ``guidance``: guidance from a second file (noisy classifier, unconditional model)
- ``results``: what the modes return
"""

from .config import SampleConfig, check_sampler_options, sampler_options
from .core import Pipeline
from .results import Generated, Interpolation, Trajectory
from .trajectory import trajectory_steps

__all__ = ["Pipeline", "SampleConfig", "Generated", "Interpolation", "Trajectory",
           "check_sampler_options", "sampler_options", "trajectory_steps"]
