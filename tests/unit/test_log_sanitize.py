"""The log sanitiser (issue 9 items 1, 7): keys masked, control characters escaped, one record per
line in both formats, whatever text a request puts into a message."""

from __future__ import annotations

import io
import json
import logging
import secrets
import string
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway import logs
from gateway.log_sanitize import mask_keys, register_secret, sanitize

PROPS = settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
ALNUM = string.ascii_letters + string.digits
ADMIN = "admin-key-" + secrets.token_hex(8)
register_secret(ADMIN)


def a_key() -> str:
    return "".join(secrets.choice(ALNUM) for _ in range(60))


@pytest.fixture
def captured(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    """The root logger configured by gateway.logs (format: the test's param), into a buffer."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    logs.configure("INFO", request.param)
    out = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    yield out
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


@PROPS
@given(st.text(), st.text())
@example("GET /x?token=", " HTTP/1.1")
@example("Authorization: Bearer ", "\x00")
def test_sanitized_text_has_no_control_characters_and_no_key(before: str, after: str) -> None:
    for key in (a_key(), ADMIN):
        for glue in ("token=", "X-Api-Key: ", "Authorization: ApiKey ", "x-api-key=", " "):
            out = sanitize(before + glue + key + after)
            assert key not in out
            assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in out), out


def test_masks_each_way_a_key_is_sent() -> None:
    key = a_key()
    for text in (
        f"GET /v0/events?name=x&token={key}\x01 HTTP/1.1",
        f"b'X-Api-Key: {key}\\x00'",
        f"Authorization: Bearer {key}",
        f"authorization=apikey {key}",
        f"id {key}.",
    ):
        assert key not in mask_keys(text), text
    assert (
        mask_keys("request 0123456789abcdef0123456789abcdef") == "request 0123456789abcdef0123456789abcdef"
    )  # request ids are not keys


@pytest.mark.parametrize("captured", ["text", "json"], indirect=True)
@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.text())
def test_one_record_is_one_line(captured: io.StringIO, text: str) -> None:
    key = a_key()
    captured.seek(0)
    captured.truncate()
    logging.getLogger("gateway.test").warning("path %s token=%s", text, key)
    try:
        raise ValueError(f"bad {text} {key}")
    except ValueError:
        logging.getLogger("gateway.test").exception("failed on %r", text)
    out = captured.getvalue()
    assert key not in out and ADMIN not in out
    lines = out.splitlines()
    if lines[0].startswith("{"):
        assert len(lines) == 2 and all(json.loads(line) for line in lines)
    else:
        starts = [line for line in lines if not line.startswith("  ")]
        assert len(starts) == 2 + out.count("Traceback"), lines  # the records' first lines
