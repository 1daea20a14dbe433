"""Generate images batch by batch, for requests too large to hold in memory (``sample --num 100000``).

:func:`generate_batches` yields one :class:`~difforge.pipeline.results.Generated` per batch of
``config.batch_size`` images, each made by the same batch core as :meth:`Pipeline.generate`
(image i uses seed ``seed + i``), so the images are identical to one ``generate`` call and only
one batch of float pixels is alive at a time; a writer saves each batch and drops it
(:class:`difforge.data.outputs.BatchWriter`).
"""

from __future__ import annotations

from typing import Iterator, Optional

from .config import SampleConfig
from .core import ClassLabel, Pipeline
from .results import Generated


def generate_batches(pipe: Pipeline, num: int = 16, class_label: ClassLabel = None, *, config: Optional[SampleConfig] = None,
                     seed: int = 0, progress: bool = False, **options) -> Iterator[Generated]:
    """Like :meth:`Pipeline.generate`, one batch at a time. Every setting is checked before the
    first batch; ``Generated.labels`` of each batch are the labels of its images."""
    from tqdm import tqdm

    from ..data.io import to_uint8

    pipe = pipe._for_request(options, num, class_label)  # guidance and prompts
    labels, seeds = pipe.request(num, class_label, seed, None)
    config, opts = pipe.prepare(config, options)
    timesteps = pipe.timesteps(config)
    bs = config.batch_size
    bar = tqdm(total=len(seeds) * len(timesteps), disable=not progress, desc=f"sample {config.sampler}", unit="step", dynamic_ncols=True)
    try:
        for start in range(0, len(seeds), bs):
            part = None if labels is None else labels[start : start + bs]
            x = pipe.sample_batches(seeds[start : start + bs], part, config, opts, timesteps=timesteps,
                                    on_step=lambda _s, b, *_: bar.update(b))
            x, masks = pipe.split_mask(x)
            yield Generated(to_uint8(x), part, pipe.class_names, masks=masks)
            del x
    finally:
        bar.close()


__all__ = ["generate_batches"]
