"""HTTP API + web page over :class:`difforge.pipeline.Pipeline` (``difforge serve``).

    from difforge.serve import ServeSettings, create_app, load_models
    app = create_app(load_models(["ema.safetensors"]), ServeSettings(token="s3cret"))

FastAPI and uvicorn are imported only when an app is built (``pip install 'difforge[serve]'``).
The API is described in :mod:`difforge.serve.app`; routes, schemas, state (models, workers, jobs)
and settings each have their module.
"""

from .app import create_app
from .settings import ServeSettings
from .models import load_models, model_names

__all__ = ["ServeSettings", "create_app", "load_models", "model_names"]
