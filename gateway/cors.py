"""Cross-origin requests from web pages (CORS, per the Fetch standard).

Only the ingest routes of every dialect (and the REST proxy's reads) may be used cross-origin:
a preflight there is answered (204) for an allowed origin, and every reply to an allowed origin,
errors and 429/503 included, carries `Access-Control-Allow-Origin` so the page can read the
status. A request whose `Origin` is not allowed is refused (403) before it is read, so a
browser's simple requests (forms, `sendBeacon`) from another site write nothing. The management
API (streams, keys) is never callable cross-origin: a preflight or a request there with a
foreign `Origin` is refused, with no CORS headers. No credentials mode: keys travel in headers or
the query, never in cookies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp import web

from gateway.errors import BadRequest, Forbidden

ANY = "*"
ALLOW_METHODS = "POST, OPTIONS"
ALLOW_HEADERS = "Content-Type, Authorization, X-Api-Key, Content-Encoding, X-Request-ID"
EXPOSE_HEADERS = "Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, X-Request-ID"
MAX_AGE = "7200"  # seconds; Chromium caps a preflight cache entry at 2 hours
# The ingest routes of every dialect (paths as requested; a 405 has no matched route to ask).
_INGEST = re.compile(
    r"/v0/events|/v1/data_sources/ingest"
    r"|(?:/[A-Za-z0-9_-]{1,128})?/api/v1beta[12]/streams/[^/]+/ingest"
    r"|/topics/[^/]+|/v3/clusters/[^/]+/topics/[^/]+/records"
)
# The REST proxy's reads, which its browser clients make first (and its produce to a partition):
# cross-origin as the ingest routes, with the same key and scopes as from any other client.
_PROXY = re.compile(r"/topics|/topics/[^/]+/partitions(?:/[^/]+)?|/brokers")
OPS_PATHS = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/")  # no CORS rules, never draining
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


def _normalized(raw: str) -> str:
    try:
        return normalize_origin(raw)
    except ValueError:
        return raw  # `null` and garbage stay as sent: never equal to an allowed origin


def origin_of(request: web.Request) -> str | None:
    """The request's normalized `Origin`; None when absent; `null` and garbage stay as sent."""
    raw = request.headers.get("Origin")
    return None if raw is None else _normalized(raw)


@dataclass(frozen=True, slots=True)
class Policy:
    """The origins allowed on the ingest routes (`*`: any)."""

    origins: tuple[str, ...]
    # the headers of an ingest reply to a request without `Origin` (most of them): made once
    plain_headers: tuple[tuple[str, str], ...] = field(init=False)

    def __post_init__(self) -> None:
        plain = (
            (("Access-Control-Allow-Origin", ANY), ("Access-Control-Expose-Headers", EXPOSE_HEADERS))
            if self.origins == (ANY,)
            else (("Vary", "Origin"),)
        )
        object.__setattr__(self, "plain_headers", plain)

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


OPS, INGEST, MANAGE = "ops", "ingest", "manage"  # the kinds of route, as CORS treats them


def is_ingest(path: str) -> bool:
    """True for the ingest routes of every dialect."""
    return _INGEST.fullmatch(path) is not None


def kind_of(path: str) -> str:
    """`ops` (health, metrics: no CORS rules), `ingest` (usable cross-origin) or `manage`
    (never cross-origin)."""
    if path in OPS_PATHS:
        return OPS
    return INGEST if is_ingest(path) or _PROXY.fullmatch(path) is not None else MANAGE


def _refused(origin: str, method: str) -> Forbidden:
    shown = origin if _ORIGIN.fullmatch(origin) else "this origin"
    done = "" if method in ("GET", "HEAD", "OPTIONS") else "; nothing was written"
    return Forbidden(f"cross-origin requests from {shown} are not allowed here{done}")


def check(request: web.Request, kind: str, raw_origin: str | None) -> web.Response | None:
    """Before the handler (the middleware calls this when an `Origin` came or the method is
    OPTIONS): the answer to a preflight on an ingest route; Forbidden for a foreign origin where
    it is not allowed; None to go on to the handler."""
    if kind == OPS:
        return None
    origin = None if raw_origin is None else _normalized(raw_origin)
    if kind == INGEST:
        if origin is not None and not (request.app[POLICY].allows(origin) or _same_origin(origin, request)):
            raise _refused(origin, request.method)
        if request.method == "OPTIONS":  # a preflight, or a plain OPTIONS: what may be sent here
            headers = {"Allow": ALLOW_METHODS}
            if origin is not None and "Access-Control-Request-Method" in request.headers:
                headers.update(
                    {
                        "Access-Control-Allow-Methods": ALLOW_METHODS,
                        "Access-Control-Allow-Headers": ALLOW_HEADERS,
                        "Access-Control-Max-Age": MAX_AGE,
                    }
                )
            return web.Response(status=204, headers=headers)
        return None
    if origin is not None and not _same_origin(origin, request):
        raise _refused(origin, request.method)  # the management API is never used cross-origin
    return None


def reply_headers(policy: Policy, raw_origin: str | None) -> tuple[tuple[str, str], ...]:
    """The CORS headers of every ingest reply (errors, 429 and 503 too), for its `Origin`."""
    if raw_origin is None:
        return policy.plain_headers
    origin = _normalized(raw_origin)
    vary = () if policy.any else (("Vary", "Origin"),)
    if not policy.allows(origin):
        return vary
    return (
        *vary,
        ("Access-Control-Allow-Origin", policy.allow_origin_value(origin)),
        ("Access-Control-Expose-Headers", EXPOSE_HEADERS),
    )


def install(app: web.Application, allow_origins: str) -> None:
    """Attach the policy (gateway.middleware applies it)."""
    app[POLICY] = Policy.from_setting(allow_origins)
