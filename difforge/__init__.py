"""difforge: train diffusion models on your own image folder and generate new images.

    >>> import difforge
    >>> difforge.Trainer(data="my_defects/", run="first", max_steps=2000).fit()
    >>> pipe = difforge.Pipeline.from_checkpoint("runs/first/checkpoints/ema.safetensors")
    >>> images = pipe.generate(num=8, class_label="scratch")
"""

from .version import __version__

__all__ = ["Trainer", "Pipeline", "__version__"]


def __getattr__(name):
    # Imported lazily so `import difforge` (and the CLI's --help) stays fast.
    if name == "Trainer":
        from .train.trainer import Trainer

        return Trainer
    if name == "Pipeline":
        from .pipeline import Pipeline

        return Pipeline
    raise AttributeError(f"module 'difforge' has no attribute {name!r}")
