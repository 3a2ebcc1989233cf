"""A small HTTP client of a running gateway's management API (streams and API keys), for the CLI."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

API = "/api/v1beta2"


class ApiError(Exception):
    """The gateway answered with an error status; `body` is its JSON error (or the raw text)."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


class Unreachable(Exception):
    """No answer from the gateway (connection refused, timeout, bad URL)."""


def parse_column(spec: str) -> dict[str, Any]:
    """`name:type[:default]` as a create-stream column (the default may itself hold colons)."""
    parts = spec.split(":", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError(f"invalid column {spec!r}: use name:type or name:type:default")
    column: dict[str, Any] = {"name": parts[0], "type": parts[1]}
    if len(parts) == 3:
        column["default"] = parts[2]
    return column


def stream_definition(
    name: str,
    columns: list[str],
    *,
    mode: str | None = None,
    primary_key: str | None = None,
    shards: int | None = None,
    description: str | None = None,
    partitioner: str | None = None,
) -> dict[str, Any]:
    """The create-stream body for the CLI's flags."""
    body: dict[str, Any] = {"name": name, "columns": [parse_column(c) for c in columns]}
    optional = {
        "mode": mode,
        "primary_key": primary_key,
        "shards": shards,
        "description": description,
        "partitioner": partitioner,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


class GatewayClient:
    """Calls `/api/v1beta2/...` of the gateway at `url` with an API key."""

    def __init__(self, url: str, key: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One request; the decoded JSON reply (None for 204). Raises ApiError or Unreachable."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"X-Api-Key": self.key, "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                detail: Any = json.loads(raw)
            except ValueError:
                detail = raw.decode(errors="replace")
            raise ApiError(err.code, detail) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise Unreachable(f"cannot reach the gateway at {self.url}: {exc}") from None
        return json.loads(raw) if raw else None

    @staticmethod
    def _quote(part: str) -> str:
        return urllib.parse.quote(part, safe="")

    # ---- streams --------------------------------------------------------------------------------
    def list_streams(self) -> Any:
        """Every stream."""
        return self.call("GET", f"{API}/streams")

    def get_stream(self, name: str) -> Any:
        """One stream."""
        return self.call("GET", f"{API}/streams/{self._quote(name)}")

    def create_stream(self, definition: dict[str, Any]) -> Any:
        """Create a stream from a create-stream body; the new stream."""
        return self.call("POST", f"{API}/streams", definition)

    def delete_stream(self, name: str) -> None:
        """Delete a stream and its topic."""
        self.call("DELETE", f"{API}/streams/{self._quote(name)}")

    # ---- API keys -------------------------------------------------------------------------------
    def list_keys(self) -> Any:
        """Every API key (never the keys themselves)."""
        return self.call("GET", f"{API}/apikeys")

    def create_key(
        self,
        *,
        name: str | None = None,
        expire_in: str | None = None,
        expire_at: str | None = None,
        permissions: list[str] | None = None,
        rate_limit: int | None = None,
        allowed_origins: list[str] | None = None,
    ) -> Any:
        """Create an API key; the reply holds the key itself, this once."""
        body = {
            "name": name,
            "expire_in": expire_in,
            "expire_at": expire_at,
            "permissions": permissions or None,
            "rate_limit": rate_limit,
            "allowed_origins": allowed_origins or None,
        }
        return self.call("POST", f"{API}/apikeys", {k: v for k, v in body.items() if v})

    def delete_key(self, key_id: str) -> None:
        """Revoke an API key."""
        self.call("DELETE", f"{API}/apikeys/{self._quote(key_id)}")
