"""The dialect contract: what a module under gateway/dialects/ provides to be served.

A dialect only translates HTTP: it parses its request shape into an `IngestRequest` (or a
management call), and renders the outcome, and every error, in its own reply format. See
gateway/dialects/README.md for adding one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web

from gateway.errors import GatewayError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Route = tuple[str, str, Handler]  # (method, path template, handler)
ErrorRenderer = Callable[[GatewayError, str], web.Response]


class Dialect(Protocol):
    """A dialect module: its routes, and how its errors look on the wire."""

    def routes(self) -> list[Route]:
        """(method, path, handler) of every route the dialect serves."""
        ...

    def render_error(self, err: GatewayError, request_id: str) -> web.Response:
        """The error as this dialect's clients expect it (status and JSON body; the middleware
        adds `Retry-After` and the error's own headers)."""
        ...
