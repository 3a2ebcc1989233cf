"""The OpenAPI 3.1 document, generated from the routes the application registers.

Each handler carries its `Operation` (set with the `@operation(...)` decorator: summary, request
and reply body types, error statuses, parameters). `build_spec` walks the same
(method, path, handler) list that the application registers, so the document cannot list a route
that does not exist, and a route whose handler has no `Operation` is left out (and logged), which
the consistency test catches. JSON Schemas come from the msgspec types with
`msgspec.json.schema_components`.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

log = logging.getLogger(__name__)
ATTRIBUTE = "openapi_operation"
REF_TEMPLATE = "#/components/schemas/{name}"
# aiohttp's own syntax for path variables: `{name}` or `{name:regex}` (regex may hold `{m,n}`).
_VARIABLE = re.compile(r"\{(?P<name>[_a-zA-Z][_a-zA-Z0-9]*)(?::(?P<re>[^{}]*(?:\{[^{}]*\}[^{}]*)*))?\}")
_MAX_ENUM = 32

SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "apiKeyHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Api-Key",
        "description": "The API key in `X-Api-Key: KEY`.",
    },
    "apiKeyAuthorization": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "The API key as `Authorization: ApiKey KEY`.",
    },
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "The API key as `Authorization: Bearer KEY`.",
    },
    "basic": {
        "type": "http",
        "scheme": "basic",
        "description": "HTTP Basic with the API key as password (Kafka REST Proxy clients).",
    },
    "tokenQuery": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "The API key in the `token` query parameter.",
    },
}
API_KEY = ("apiKeyHeader", "apiKeyAuthorization", "bearer")
CATALOG_UNCONFIRMED = "Kafka did not confirm the catalog change in time; it may still take effect."


class Doc(msgspec.Struct, forbid_unknown_fields=True):
    """Base of the reply bodies: the Struct a handler encodes is the one this document describes.
    Unknown fields are forbidden, so the published schemas say `additionalProperties: false`."""


RETRY_AFTER = {"Retry-After": "Seconds to wait before retrying."}
RATE_LIMIT_HEADERS = {
    "X-RateLimit-Limit": "Requests per second this key may make.",
    "X-RateLimit-Remaining": "Requests left in the current window.",
    "X-RateLimit-Reset": "Seconds until the limit is fully replenished.",
}
PATH_PARAMETERS = {
    "version": "API version (both are served identically).",
    "workspace": "Workspace id, as in the vendor's URLs; one gateway serves one workspace.",
    "name": "Stream name.",
    "id": "API key id.",
    "schema_version": "A version of the stream's schema (1 = as created).",
}

H = TypeVar("H", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Reply:
    """One documented reply: a description, a body type (None: no body) and its media type."""

    description: str
    body: Any = None
    media_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Param:
    """A query or header parameter."""

    name: str
    description: str
    type: Any = str
    where: str = "query"
    required: bool = False


@dataclass(frozen=True, slots=True)
class Operation:
    """What the document says about one handler."""

    summary: str
    replies: Mapping[int, Reply]
    request: Mapping[str, Any] = field(default_factory=dict)  # media type -> body type
    errors: Mapping[int, Reply] = field(default_factory=dict)  # status -> when (body: error_body)
    error_body: Any = None
    params: Sequence[Param] = ()
    security: Sequence[str] = API_KEY
    tags: Sequence[str] = ()
    description: str = ""


def operation(
    summary: str,
    *,
    replies: Mapping[int, Reply],
    request: Any = None,
    errors: Mapping[int, str | Reply] | None = None,
    error_body: Any = None,
    params: Sequence[Param] = (),
    security: Sequence[str] = API_KEY,
    auth_status: int = 401,
    tags: Sequence[str] = (),
    description: str = "",
) -> Callable[[H], H]:
    """Attach an `Operation` to a handler. `request` is a body type (sent as JSON) or a mapping
    of media type to body type; an error is described by a text or a `Reply` (for its headers;
    its body is `error_body`). Routes with `security` also document `auth_status` (a missing or
    bad key), 429 (its request rate) and 503."""
    if request is not None and not isinstance(request, Mapping):
        request = {"application/json": request}
    errs = {status: e if isinstance(e, Reply) else Reply(e) for status, e in (errors or {}).items()}
    if security:
        errs.setdefault(auth_status, Reply("The API key is missing, unknown, expired or revoked."))
        errs.setdefault(
            503,
            Reply("Not ready, draining or Kafka unreachable: nothing was done; retry.", headers=RETRY_AFTER),
        )
        errs.setdefault(
            429,
            Reply(
                "The key's request rate is used up: nothing was done; retry.",
                headers={**RETRY_AFTER, **RATE_LIMIT_HEADERS},
            ),
        )

    def mark(handler: H) -> H:
        op = Operation(
            summary,
            dict(replies),
            dict(request or {}),
            errs,
            error_body,
            tuple(params),
            tuple(security),
            tuple(tags),
            description or (handler.__doc__ or ""),
        )
        setattr(handler, ATTRIBUTE, op)
        return handler

    return mark


def operation_of(handler: Any) -> Operation | None:
    """The handler's `Operation`, if it has one."""
    op = getattr(handler, ATTRIBUTE, None)
    return op if isinstance(op, Operation) else None


def _class_chars(body: str) -> list[str] | None:
    if body.startswith("^") or "\\" in body:
        return None
    chars: list[str] = []
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            chars += [chr(c) for c in range(ord(body[i]), ord(body[i + 2]) + 1)]
            i += 3
        else:
            chars.append(body[i])
            i += 1
    return chars


def expand(regex: str) -> list[str] | None:
    """Every string a simple regex (literals and `[...]` classes) matches; None if not simple."""
    parts: list[list[str]] = []
    i = 0
    while i < len(regex):
        c = regex[i]
        if c == "[":
            end = regex.find("]", i)
            chars = _class_chars(regex[i + 1 : end]) if end > i else None
            if chars is None:
                return None
            parts.append(chars)
            i = end + 1
        elif c in "\\.*+?(){}|^$":
            return None
        else:
            parts.append([c])
            i += 1
    count = 1
    for p in parts:
        count *= len(p)
    if count > _MAX_ENUM:
        return None
    return ["".join(p) for p in itertools.product(*parts)]


def openapi_path(path: str) -> tuple[str, list[dict[str, Any]]]:
    """An aiohttp route path as an OpenAPI path (`{version}`) and its path parameters."""
    params: list[dict[str, Any]] = []

    def replace(m: re.Match[str]) -> str:
        name, regex = m.group("name"), m.group("re")
        schema: dict[str, Any] = {"type": "string"}
        if regex:
            values = expand(regex)
            if values is not None:
                schema["enum"] = values
            else:
                schema["pattern"] = f"^{regex}$"
        params.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": schema,
                "description": PATH_PARAMETERS.get(name, f"Path parameter `{name}`."),
            }
        )
        return "{" + name + "}"

    return _VARIABLE.sub(replace, path), params


class _Schemas:
    """Collects body types, then turns them into JSON Schemas sharing one components section."""

    def __init__(self) -> None:
        self.types: list[Any] = []

    def ref(self, kind: Any) -> int:
        if kind not in self.types:
            self.types.append(kind)
        return self.types.index(kind)

    def build(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        schemas, components = msgspec.json.schema_components(self.types, ref_template=REF_TEMPLATE)
        return list(schemas), dict(components)


def _unique_id(base: str, used: set[str]) -> str:
    candidate, n = base, 2
    while candidate in used:
        candidate, n = f"{base}_{n}", n + 1
    used.add(candidate)
    return candidate


def build_spec(
    routes: Iterable[tuple[str, str, Any]], *, title: str, version: str, description: str = ""
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route whose handler has an `Operation`."""
    schemas = _Schemas()
    pending: list[tuple[str, str, list[dict[str, Any]], Operation, str]] = []
    undocumented: list[str] = []
    for method, path, handler in routes:
        op = operation_of(handler)
        if op is None:
            undocumented.append(f"{method} {path}")
            continue
        oapi, path_params = openapi_path(path)
        pending.append((method.lower(), oapi, path_params, op, handler.__name__))
    if undocumented:
        log.warning(
            "routes without OpenAPI operation (left out of /openapi.json): %s", ", ".join(undocumented)
        )
    # First pass: give every body type an index; second: render with the generated schemas.
    refs: list[tuple[dict[str, int], dict[int, int], int | None]] = []
    for _m, _p, _pp, op, _n in pending:
        req = {media: schemas.ref(kind) for media, kind in op.request.items()}
        rep = {status: schemas.ref(r.body) for status, r in op.replies.items() if r.body is not None}
        err = schemas.ref(op.error_body) if op.error_body is not None else None
        refs.append((req, rep, err))
    for p in (q for _m, _p, _pp, op, _n in pending for q in op.params):
        schemas.ref(p.type)
    generated, components = schemas.build()

    paths: dict[str, dict[str, Any]] = {}
    used_ids: set[str] = set()
    for (method, oapi, path_params, op, name), (req, rep, err) in zip(pending, refs, strict=True):
        entry: dict[str, Any] = {
            "operationId": _unique_id(name, used_ids),
            "summary": op.summary,
            "description": op.description.strip(),
            "tags": list(op.tags),
            "parameters": path_params
            + [
                {
                    "name": p.name,
                    "in": p.where,
                    "required": p.required,
                    "description": p.description,
                    "schema": generated[schemas.ref(p.type)],
                }
                for p in op.params
            ],
            "responses": {},
        }
        if not entry["parameters"]:
            del entry["parameters"]
        if req:
            entry["requestBody"] = {
                "required": True,
                "content": {media: {"schema": generated[i]} for media, i in req.items()},
            }
        for status, r in sorted(op.replies.items()):
            out: dict[str, Any] = {"description": r.description}
            if r.body is not None:
                out["content"] = {r.media_type: {"schema": generated[rep[status]]}}
            if r.headers:
                out["headers"] = {
                    h: {"description": d, "schema": {"type": "string"}} for h, d in r.headers.items()
                }
            entry["responses"][str(status)] = out
        for status, r in sorted(op.errors.items()):
            out = {"description": r.description}
            if err is not None:
                out["content"] = {"application/json": {"schema": generated[err]}}
            if r.headers:
                out["headers"] = {
                    h: {"description": d, "schema": {"type": "string"}} for h, d in r.headers.items()
                }
            entry["responses"][str(status)] = out
        if path_params and "404" not in entry["responses"]:
            # The router answers 404 when a path parameter does not match its pattern.
            out = {"description": "No route matches the path (e.g. an invalid workspace id)"}
            if err is not None:
                out["content"] = {"application/json": {"schema": generated[err]}}
            entry["responses"]["404"] = out
        entry["security"] = [{scheme: []} for scheme in op.security]
        paths.setdefault(oapi, {})[method] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": SECURITY_SCHEMES},
    }
