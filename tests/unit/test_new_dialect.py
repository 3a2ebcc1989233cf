"""A fourth dialect is one module plus one registry entry: the example in gateway/dialects/README.md,
run as written, serves ingest and renders errors in its own shape."""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway import app as app_module
from gateway.app import build_app
from gateway.config import Settings
from gateway.context import GATEWAY

ADMIN = "unit-admin-key"
README = Path(__file__).parents[2] / "gateway" / "dialects" / "README.md"


def readme_dialect() -> types.ModuleType:
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert code is not None, "the README lost its example"
    module = types.ModuleType("acme")
    exec(compile(code.group(1), str(README), "exec"), module.__dict__)
    return module


async def test_the_readme_dialect_serves_ingest(
    tmp_path: Path, aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    acme = readme_dialect()
    monkeypatch.setattr(app_module, "DIALECTS", (*app_module.DIALECTS, acme))
    app = build_app(Settings(data_dir=tmp_path), ADMIN)
    client: TestClient[Any, Any] = await aiohttp_client(app)
    await app[GATEWAY].lifecycle.wait_catalog()
    reply = await client.post(
        "/api/v1beta2/streams",
        headers={"X-Api-Key": ADMIN},
        json={"name": "s", "columns": [{"name": "id", "type": "string"}]},
    )
    assert reply.status == 201, await reply.text()
    reply = await client.post(
        "/acme/s?wait=true", headers={"X-Api-Key": ADMIN}, data=b'{"id": "a"}\n{"id": "b"}\n'
    )
    assert reply.status == 201 and await reply.json() == {"accepted": 2}
    reply = await client.post("/acme/nope", headers={"X-Api-Key": ADMIN}, data=b'{"id": "a"}\n')
    assert reply.status == 404 and await reply.json() == {"reason": "stream 'nope' does not exist"}
    assert (tmp_path / "sink" / "ingest.s.ndjson").read_bytes() == b'{"id":"a"}\n{"id":"b"}\n'
