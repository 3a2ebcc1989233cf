"""The one sanitiser every log record passes through (installed on the log handler by
`gateway.logs.configure`): API keys are masked and control characters escaped, so that request
bytes quoted in a message (a path, a header, a parser error) can neither leak a key nor forge a line."""

from __future__ import annotations

import logging
import re
from typing import Any

REDACTED = "[redacted]"
# What may carry a key: `?token=K` / `&token=K`, `X-Api-Key: K`, `Authorization: [scheme] K`, and
# anything shaped like a key this gateway issues (12-character id + 48-character secret: any run
# of 60 or more letters and digits).
_KEY_PATTERNS = (
    re.compile(r"(?i)(token=)[^&\s'\"]*"),
    re.compile(r"(?i)(x-api-key['\"]?\s*[:=,]\s*['\"]?)[^\s'\",}]*"),
    re.compile(
        r"(?i)(authorization['\"]?\s*[:=,]\s*['\"]?(?:(?:apikey|bearer|basic|token)\s+)?)"
        r"[^\s'\",}]*"
    ),
    re.compile(r"()[A-Za-z0-9]{60,}"),  # a key, or a key glued to more letters or digits
)
# C0, DEL, C1 and the Unicode line and paragraph separators: each becomes a visible escape.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_secrets: set[str] = set()


def register_secret(secret: str) -> None:
    """Mask `secret` (e.g. the admin key, which has no fixed shape) wherever it appears."""
    if secret:
        _secrets.add(secret)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def mask_keys(text: str) -> str:
    """`text` with every API key replaced by `[redacted]`."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern in _KEY_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def sanitize(text: str) -> str:
    """`text` with keys masked and control characters escaped: safe for one log line."""
    return _CONTROL.sub(_escape, mask_keys(text))


def sanitize_block(text: str) -> str:
    """A multi-line block (a traceback): each line sanitised, continuation lines indented so that
    no line of it can pass for a record of its own (records start with a timestamp)."""
    lines = [sanitize(line) for line in text.split("\n")]
    return "\n".join(lines[:1] + ["  " + line for line in lines[1:]])


def _clean(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return sanitize(value)
    if depth < 4 and isinstance(value, dict):
        return {str(k): _clean(v, depth + 1) for k, v in value.items()}
    if depth < 4 and isinstance(value, (list, tuple)):
        return [_clean(v, depth + 1) for v in value]
    return value


class SanitizeFilter(logging.Filter):
    """Rewrites a record in place: its message, exception text and `extra=` fields sanitised."""

    def __init__(self, standard: frozenset[str]) -> None:
        super().__init__()
        self._standard = standard

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_sanitized", False):
            return True
        record.msg = sanitize(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = sanitize_block(record.exc_text)
        if record.stack_info:
            record.stack_info = sanitize_block(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in self._standard and value is not None:
                setattr(record, key, _clean(value))
        record._sanitized = True
        return True
