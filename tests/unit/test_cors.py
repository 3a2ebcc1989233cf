"""The CORS policy: origin normalization, the --cors-allow-origins setting from every source."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import parser
from gateway.config import from_sources
from gateway.cors import Policy, is_ingest, normalize_origin, parse_origins


@pytest.mark.parametrize(
    ("raw", "origin"),
    [
        ("https://App.Example.com/", "https://app.example.com"),
        ("http://a.example:80", "http://a.example"),
        ("https://a.example:443", "https://a.example"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://[::1]:3000", "http://[::1]:3000"),
    ],
)
def test_normalize_origin(raw: str, origin: str) -> None:
    assert normalize_origin(raw) == origin


@pytest.mark.parametrize(
    "raw",
    [
        "a.example",
        "ftp://a.example",
        "http://a.example/path",
        "http://a.example:99999",
        "null",
        "*",
        "http://user@a.example",
    ],
)
def test_not_an_origin(raw: str) -> None:
    with pytest.raises(ValueError):
        normalize_origin(raw)


def test_parse_origins() -> None:
    assert parse_origins("*") == ("*",)
    assert parse_origins("") == ()
    assert parse_origins(" http://a.example , https://b.example:8443 ") == (
        "http://a.example",
        "https://b.example:8443",
    )
    with pytest.raises(ValueError, match="cannot be combined"):
        parse_origins("*, http://a.example")
    assert Policy.from_setting("*").allows("http://anything.example")
    assert not Policy.from_setting("").allows("http://a.example")
    assert Policy.from_setting("http://a.example").allow_origin_value("http://a.example") == (
        "http://a.example"
    )


def test_ingest_paths() -> None:
    for path in (
        "/v0/events",
        "/v1/data_sources/ingest",
        "/api/v1beta2/streams/s/ingest",
        "/api/v1beta1/streams/s/ingest",
        "/ws_1/api/v1beta2/streams/s/ingest",
        "/topics/t",
        "/v3/clusters/c/topics/t/records",
    ):
        assert is_ingest(path), path
    for path in (
        "/api/v1beta2/streams",
        "/api/v1beta2/streams/s",
        "/api/v1beta2/apikeys",
        "/v0/events/x",
        "/metrics",
        "/api/v1beta2/streams/s/stats",
        "/topics",
        "/topics/t/partitions",
        "/v3/clusters",
    ):
        assert not is_ingest(path), path


def test_setting_from_flag_env_and_file(tmp_path: Path) -> None:
    assert from_sources(None, {}).cors_allow_origins == "*"
    args = parser().parse_args(["serve", "--cors-allow-origins", "http://a.example"])
    assert from_sources(args, {}).cors_allow_origins == "http://a.example"
    env = {"GATEWAY_CORS_ALLOW_ORIGINS": ""}
    assert from_sources(None, env).cors_allow_origins == ""
    toml = tmp_path / "g.toml"
    toml.write_text('cors_allow_origins = "https://b.example"\n')
    assert from_sources(None, {"GATEWAY_CONFIG": str(toml)}).cors_allow_origins == ("https://b.example")
    with pytest.raises(ValueError, match="cors_allow_origins: not an origin"):
        from_sources(None, {"GATEWAY_CORS_ALLOW_ORIGINS": "b.example"})
