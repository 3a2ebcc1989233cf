"""Cross-origin requests from web pages (CORS, per the Fetch standard).

Only the ingest routes of every dialect may be used cross-origin: an `OPTIONS` preflight there is
answered (204) for an allowed origin, and every reply to an allowed origin, errors and 429/503
included, carries `Access-Control-Allow-Origin` so the page can read the status. A request whose
`Origin` is not allowed is refused (403) before it is read, so a browser's simple requests (forms,
`sendBeacon`) from another site write nothing. The management API (streams, keys) is never callable
cross-origin: a preflight or a request there with a foreign `Origin` is refused, with no CORS
headers. No credentials mode: keys travel in headers or the query, never in cookies.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from gateway.errors import BadRequest, Forbidden

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ANY = "*"
ALLOW_METHODS = "POST, OPTIONS"
ALLOW_HEADERS = "Content-Type, Authorization, X-Api-Key, Content-Encoding, X-Request-ID"
EXPOSE_HEADERS = ("Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, "
                  "X-Request-ID")
MAX_AGE = "7200"  # seconds; Chromium caps a preflight cache entry at 2 hours
# The ingest routes of every dialect (paths as requested; a 405 has no matched route to ask).
_INGEST = re.compile(r"/v0/events|/v1/data_sources/ingest"
                     r"|(?:/[A-Za-z0-9_-]{1,128})?/api/v1beta[12]/streams/[^/]+/ingest"
                     r"|/topics/[^/]+|/v3/clusters/[^/]+/topics/[^/]+/records")
_OPS = ("/healthz", "/readyz", "/metrics", "/openapi.json")
_ORIGIN = re.compile(r"(https?)://([a-z0-9.-]+|\[[0-9a-f:.]+\])(?::([0-9]{1,5}))?")


def normalize_origin(text: str) -> str:
    """`scheme://host[:port]` in lower case, default ports dropped; ValueError for anything else."""
    value = text.strip().lower().rstrip("/")
    m = _ORIGIN.fullmatch(value)
    if m is None:
        raise ValueError(f"not an origin (scheme://host[:port]): {text!r}")
    scheme, host, port = m.groups()
    if port is not None and not 1 <= int(port) <= 65535:
        raise ValueError(f"not an origin (bad port): {text!r}")
    if port is None or (scheme, port) in (("http", "80"), ("https", "443")):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{int(port)}"


def parse_origins(text: str) -> tuple[str, ...]:
    """`--cors-allow-origins`: `*` (any), empty (none), or comma-separated origins."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if items == [ANY]:
        return (ANY,)
    if ANY in items:
        raise ValueError("`*` cannot be combined with other origins")
    return tuple(normalize_origin(t) for t in items)


def validate_key_origins(origins: list[str]) -> list[str]:
    """A key's `allowed_origins`, normalized; 400 for one that is not `scheme://host[:port]`."""
    try:
        return [normalize_origin(o) for o in origins]
    except ValueError as exc:
        raise BadRequest(f"allowed_origins: {exc}") from None


def _same_origin(origin: str, request: web.Request) -> bool:
    return urlsplit(origin).netloc.lower() == request.host.lower()


def origin_of(request: web.Request) -> str | None:
    """The request's normalized `Origin`; None when absent; `null` and garbage stay as sent."""
    raw = request.headers.get("Origin")
    if raw is None:
        return None
    try:
        return normalize_origin(raw)
    except ValueError:
        return raw  # never equal to an allowed origin


@dataclass(frozen=True, slots=True)
class Policy:
    """The origins allowed on the ingest routes (`*`: any)."""

    origins: tuple[str, ...]

    @classmethod
    def from_setting(cls, text: str) -> Policy:
        """The policy of a `--cors-allow-origins` value."""
        return cls(parse_origins(text))

    @property
    def any(self) -> bool:
        """True when every origin is allowed."""
        return self.origins == (ANY,)

    def allows(self, origin: str) -> bool:
        """True when a page of `origin` may use the ingest routes."""
        return self.any or origin in self.origins

    def allow_origin_value(self, origin: str) -> str:
        """`Access-Control-Allow-Origin`: `*` when any origin may, else the origin reflected."""
        return ANY if self.any else origin


POLICY: web.AppKey[Policy] = web.AppKey("cors_policy", Policy)


def is_ingest(path: str) -> bool:
    """True for the ingest routes of every dialect."""
    return _INGEST.fullmatch(path) is not None


def _refused(origin: str) -> Forbidden:
    shown = origin if _ORIGIN.fullmatch(origin) else "this origin"
    return Forbidden(f"cross-origin requests from {shown} are not allowed here; nothing was written")


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer preflights on the ingest routes; refuse foreign origins where they are not allowed."""
    path = request.path
    if path in _OPS:
        return await handler(request)
    origin = origin_of(request)
    if is_ingest(path):
        if origin is not None and not (request.app[POLICY].allows(origin)
                                       or _same_origin(origin, request)):
            raise _refused(origin)
        if request.method == "OPTIONS":  # a preflight, or a plain OPTIONS: what may be sent here
            headers = {"Allow": ALLOW_METHODS}
            if origin is not None and "Access-Control-Request-Method" in request.headers:
                headers.update({"Access-Control-Allow-Methods": ALLOW_METHODS,
                                "Access-Control-Allow-Headers": ALLOW_HEADERS,
                                "Access-Control-Max-Age": MAX_AGE})
            return web.Response(status=204, headers=headers)
        return await handler(request)
    if origin is not None and not _same_origin(origin, request):
        raise _refused(origin)  # the management API is never callable cross-origin
    return await handler(request)


async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the CORS headers of every ingest reply (errors, 429 and 503 too)."""
    if not is_ingest(request.path):
        return
    policy = request.app[POLICY]
    origin = origin_of(request)
    if not policy.any:
        response.headers.add("Vary", "Origin")
    if origin is None:
        if not policy.any:
            return
        origin = ANY
    elif not policy.allows(origin):
        return
    response.headers["Access-Control-Allow-Origin"] = policy.allow_origin_value(origin)
    response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS


def install(app: web.Application, allow_origins: str) -> None:
    """Attach the policy and the response hook (the `guard` middleware is listed by the app)."""
    app[POLICY] = Policy.from_setting(allow_origins)
    app.on_response_prepare.append(add_headers)
