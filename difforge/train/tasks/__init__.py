"""What is trained: one module per model kind over the shared loop (see :mod:`.base` for the seam).

- ``base``: :class:`Task`, :class:`Snapshot`, the registry (:func:`make_task`, :func:`register_task`)
- ``diffusion``: DDPM training of any network and objective (pixels or cached latents)
- ``vae``: the autoencoder of latent diffusion
- ``classifier``: the noisy classifier of classifier guidance
"""

from .base import TASK_MODULES, Snapshot, Task, make_task, register_task

__all__ = ["Task", "Snapshot", "make_task", "register_task", "TASK_MODULES"]
