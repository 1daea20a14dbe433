"""`difforge serve MODEL_FILE...`: an HTTP API and a web page over the given model files."""

from __future__ import annotations

import os


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="serve models over HTTP: a JSON API (/v1, docs at /docs) and a web page",
        description="Load model files once and serve them: a web page at /, a JSON API under /v1 "
        "(GET /v1/models, POST /v1/generate, POST /v1/jobs + GET /v1/jobs/ID, GET /v1/health), documented at /docs. "
        "Clients pick models by name (the file stem). Listens on 127.0.0.1 only unless --host is given with --token.",
    )
    p.add_argument("models", nargs="*", metavar="MODEL_FILE", help=".safetensors model files (named by their stem)")
    p.add_argument("--models-dir", default=None, help="also serve every model file under this folder")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--token", default=None, help="require Authorization: Bearer TOKEN on every /v1 call (default: $DIFFORGE_TOKEN)")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without a token")
    p.add_argument("--max-num", type=int, default=64, help="most images per request (default 64)")
    p.add_argument("--max-steps", type=int, default=1000, help="most sampler steps per request (default 1000)")
    p.add_argument("--queue", type=int, default=8, help="requests waiting per model before 429 (default 8)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.set_defaults(func=run)


def run(args) -> int:
    from ..serve import ServeSettings, load_models, server
    from ..runtime import set_threads
    from ..serve.app import require_serve_extra
    from ..train.logging import get_logger

    require_serve_extra()
    token = args.token or os.environ.get("DIFFORGE_TOKEN") or None
    server.check_exposure(args.host, token, args.insecure)
    settings = ServeSettings(max_num=args.max_num, max_steps=args.max_steps, queue=args.queue, token=token)
    models = load_models(args.models, args.models_dir, device=args.device, precision=args.precision)
    get_logger()  # the request log goes to stderr
    set_threads()
    server.run(models, settings, host=args.host, port=args.port, insecure=args.insecure, announce=lambda s: print(s, flush=True))
    return 0
