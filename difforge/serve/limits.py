"""The token and body-size checks, done before any of a request's body is read.

:class:`Guard` is a plain ASGI middleware in front of every route. With a token it answers 401
to any request without ``Authorization: Bearer TOKEN`` (the page and its static files stay
open; ``/v1``, ``/docs`` and ``/openapi.json`` do not) before reading a byte of the body. Then
it bounds the body: a ``Content-Length`` over the limit is answered 413 at once, and a body
without one (chunked) is counted as it streams and cut off with 413 at the limit. So what a
request can make the server hold is the limit, whatever the client sends. The limit is
``max_body_bytes`` (JSON requests, 1 MB by default), or ``max_upload_bytes`` for the paths in
``upload_paths`` (none yet: there for routes that take files).
"""

from __future__ import annotations

import hmac
import json
from typing import Dict, List, Optional, Tuple

class BodyTooLarge(Exception):
    """A streamed body passed the limit; the guard answers 413."""


def _is_public(path: str) -> bool:
    """The page and its files: open, since the page asks for the token itself."""
    return path == "/" or path == "/favicon.ico" or path.startswith("/static/")


def _header(scope, name: bytes) -> Optional[bytes]:
    for k, v in scope.get("headers", ()):
        if k.lower() == name:
            return v
    return None


def token_ok(scope, token: str) -> bool:
    """True when the request carries ``Authorization: Bearer TOKEN`` (compared in constant time)."""
    value = _header(scope, b"authorization") or b""
    scheme, _, given = value.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token.encode())


DRAIN_MAX = 16 << 20
"""A refused body declared at most this long keeps the connection open: the server answers first and
then reads and drops the rest (uvicorn discards a body once its response is complete), because
closing a socket with unread bytes makes the kernel send a TCP reset, which can destroy the answer
before the client reads it (seen: an 8 MB POST got "peer closed connection" instead of its 413).
Longer or undeclared (chunked) bodies are answered and the connection closed at once."""


def _answer(status: int, detail: str, field: Optional[str], extra: Optional[List[Tuple[bytes, bytes]]] = None,
            close: bool = True):
    body = json.dumps({"detail": f"{field}: {detail}" if field else detail, "field": field}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               *([(b"connection", b"close")] if close else []), *(extra or [])]  # close: the unread rest is not waited for
    return [{"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": body}]


class Guard:
    """ASGI middleware: the token first, then the body limit (see the module docstring)."""

    def __init__(self, app, token: Optional[str], max_body_bytes: int, max_upload_bytes: int, upload_paths=()):
        self.app, self.token = app, token
        self.max_body, self.max_upload, self.upload_paths = max_body_bytes, max_upload_bytes, tuple(upload_paths)

    def limit_for(self, path: str) -> int:
        return self.max_upload if any(path.startswith(p) for p in self.upload_paths) else self.max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        declared = _header(scope, b"content-length")
        try:
            size = int(declared) if declared is not None else None
        except ValueError:
            return await _send(send, _answer(400, "Content-Length is not a number", "body"))
        drain = size is not None and 0 <= size <= DRAIN_MAX
        if self.token is not None and not _is_public(path) and not token_ok(scope, self.token):
            return await _send(send, _answer(401, "a valid token is needed: send the header Authorization: Bearer TOKEN", None,
                                             [(b"www-authenticate", b"Bearer")], close=not drain))
        limit = self.limit_for(path)
        if size is not None and size > limit:
            return await _send(send, _too_large(limit, size, close=not drain))
        return await self._bounded(scope, receive, send, limit)

    async def _bounded(self, scope, receive, send, limit: int):
        seen = 0
        state: Dict[str, bool] = {"over": False, "started": False}

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    state["over"] = True
                    raise BodyTooLarge()
            return message

        async def guarded_send(message):
            if state["over"]:  # whatever the app answers to the cut-off body, the client gets 413
                if message["type"] == "http.response.start" and not state["started"]:
                    state["started"] = True
                    await _send(send, _too_large(limit))
                return
            state["started"] = state["started"] or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, guarded_send)
        except BodyTooLarge:
            if not state["started"]:
                state["started"] = True
                await _send(send, _too_large(limit))


def _too_large(limit: int, size: Optional[int] = None, close: bool = True):
    got = f" (got {size:,} bytes)" if size is not None else ""
    return _answer(413, f"the request body is larger than this server's limit of {limit:,} bytes{got}", "body", close=close)


async def _send(send, messages) -> None:
    for m in messages:
        await send(m)


__all__ = ["DRAIN_MAX", "BodyTooLarge", "Guard", "token_ok"]
