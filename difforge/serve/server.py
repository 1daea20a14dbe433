"""Run the app under uvicorn: refuse an open bind without a token, bind the socket, serve.

The socket is bound here (not by uvicorn) so ``--port 0`` picks a free port and the printed
address is the real one, before any request can arrive.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from typing import Callable, Dict, Optional

from ..errors import UserError
from .app import create_app
from .settings import ServeSettings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: Optional[str], insecure: bool) -> None:
    """Any address other than loopback lets other machines in: demand a token or an explicit --insecure."""
    if not is_loopback(host) and not token and not insecure:
        raise UserError(f"--host {host} lets other machines reach the server; give --token TOKEN (or set DIFFORGE_TOKEN), or --insecure to allow anyone")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one)."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be 0..65535, got {port}")
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UserError(f"--host {host} is not an address this machine can bind ({e.strerror})") from None
    family, _, _, _, addr = infos[0]
    try:
        return socket.create_server(addr, family=family, backlog=128)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror}); is another server running there? try --port 0") from None


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run(models: Dict[str, object], settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000,
        insecure: bool = False, announce: Callable[[str], None] = print) -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM end it cleanly)."""
    try:
        import uvicorn
    except ImportError:
        raise UserError("serving needs FastAPI and uvicorn: pip install 'difforge[serve]'") from None
    check_exposure(host, settings.token, insecure)
    app = create_app(models, settings)
    sock = bind(host, port)
    url = url_of(sock)
    announce(f"serving {len(models)} model(s) ({', '.join(models)}) on {url}  (page: {url}/, API docs: {url}/docs)")
    sys.stdout.flush()
    config = uvicorn.Config(app, log_config=None, access_log=False, log_level="warning", timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
