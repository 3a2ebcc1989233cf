"""One error type per outcome. Dialects decide how an error looks on the wire; the status lives here."""

from __future__ import annotations

import logging
from typing import TypeVar


class GatewayError(Exception):
    """An outcome that ends a request with a non-2xx reply."""

    status = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        row: int | None = None,
        column: str | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.row = row
        self.column = column
        self.retry_after = retry_after
        self.headers = headers or {}  # added to the reply whatever the dialect (e.g. X-RateLimit-*)


class BadRequest(GatewayError):
    """The request is malformed; nothing was written; retrying it unchanged will fail again."""

    status = 400
    code = "bad_request"


class ClientDisconnected(GatewayError):
    """The client hung up before its body was complete: nothing was written. Nobody reads the
    reply; the status (nginx's 499) is for the request counters and the log line."""

    status = 499
    code = "client_closed_request"


class InvalidRow(BadRequest):
    """A row does not match the stream's schema."""

    code = "invalid_row"


class MalformedBody(BadRequest):
    """The body is not valid JSON / UTF-8 / gzip, or is truncated."""

    code = "malformed_body"


class Unauthenticated(GatewayError):
    """No key, or a key that is unknown, expired or revoked."""

    status = 401
    code = "unauthenticated"


class Forbidden(GatewayError):
    """The key is valid but lacks the scope the route needs."""

    status = 403
    code = "forbidden"


class NotFound(GatewayError):
    """The stream (or key, or route) does not exist."""

    status = 404
    code = "not_found"


class Conflict(GatewayError):
    """The resource already exists, or is in a state that forbids the request."""

    status = 409
    code = "conflict"


class PayloadTooLarge(GatewayError):
    """The body, or the body after decompression, exceeds the configured limit."""

    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(GatewayError):
    """The content type or content encoding is not one the route accepts."""

    status = 415
    code = "unsupported_media_type"


class TooManyRequests(GatewayError):
    """The stream's queue (or the memory cap) cannot take the request's rows; nothing was queued."""

    status = 429
    code = "queue_full"


class Overloaded(TooManyRequests):
    """As many requests as the gateway may decode at once are being decoded; nothing was written."""

    code = "overloaded"


class RateLimited(TooManyRequests):
    """The key has used up its request rate; nothing was written; retry after `Retry-After`."""

    code = "rate_limited"


class Unavailable(GatewayError):
    """Kafka is unreachable or the gateway is draining; nothing was written; safe to retry."""

    status = 503
    code = "unavailable"


class NotConfirmed(GatewayError):
    """wait=true timed out: the rows are queued and may still be written. Retrying may duplicate."""

    status = 504
    code = "not_confirmed"


class RequestTimeout(GatewayError):
    """The client stopped sending the request body; nothing was written."""

    status = 408
    code = "request_timeout"


class NotDurable(GatewayError):
    """Durable mode: the rows are queued but the spool could not fsync them. Unknown outcome."""

    status = 507
    code = "not_durable"


class Unprocessable(GatewayError):
    """Kafka refused a change for good (a topic setting it will never take); retrying cannot help."""

    status = 422
    code = "refused_by_kafka"


_log = logging.getLogger("gateway.errors")


def failed(what: str, exc: BaseException, *, retry_after: float = 1.0) -> Unavailable:
    """A 503 saying what failed and not why: the cause (broker addresses, exception text) goes to
    the log only, under the request's id, which the reply carries (`X-Request-ID`)."""
    _log.warning("%s: %s: %s", what, type(exc).__name__, exc)
    return Unavailable(
        f"{what}; retry later (the reason is in the gateway's log under this request's id)",
        retry_after=retry_after,
    )


E = TypeVar("E", bound=BaseException)


def detach(err: E) -> E:
    """`err` cut from the frames it went through (its traceback and the errors it was raised while
    handling), to be kept past its `except` block or raised again later. Those frames hold the
    request's body; one of them holding `err` back is a reference cycle that only the garbage
    collector would free, long after the reply (issue 20, item 13)."""
    err.__traceback__ = None
    err.__context__ = None
    err.__cause__ = None
    return err
