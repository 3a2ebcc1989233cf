"""Reading the quarantine on the embedded local sink (no Kafka headers there): the rows carry
their schema version as an integer, as on Kafka."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.app import build_app
from gateway.config import Settings
from tests.unit.test_dialect_errors import ADMIN, _started


async def test_schema_version_is_an_integer_on_the_local_sink(tmp_path: Path, aiohttp_client: Any) -> None:
    app = build_app(Settings(data_dir=tmp_path), ADMIN)
    client = await aiohttp_client(app)
    await _started(app)
    key = {"X-Api-Key": ADMIN}
    made = await client.post(
        "/api/v1beta2/streams", headers=key, json={"name": "q", "columns": [{"name": "n", "type": "int64"}]}
    )
    assert made.status == 201
    changed = await client.patch(
        "/api/v1beta2/streams/q",
        headers=key,
        json={"columns": [{"name": "n", "type": "int64"}, {"name": "m", "type": "nullable(string)"}]},
    )
    assert changed.status == 200 and (await changed.json())["schema_version"] == 2
    sent = await client.post("/v0/events?name=q&wait=true&token=" + ADMIN, data=b'{"n": 1}\n{"n": "x"}\n')
    assert sent.status == 200 and (await sent.json())["quarantined_rows"] == 1
    page = await client.get("/api/v1beta2/streams/q/quarantine", headers=key)
    rows = (await page.json())["rows"]
    assert [r["schema_version"] for r in rows] == [2]
