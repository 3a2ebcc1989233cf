"""From the local sink to Kafka: `ingest-gateway catalog export` of an embedded gateway's catalog
and `catalog import` into the Kafka catalog topic carry streams and API keys over (the keys keep
working); a Kafka gateway starting with an empty catalog beside a local catalog.json says so."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.integration.harness import (
    ADMIN_KEY,
    ROOT,
    Gateway,
    read_topic,
    unique_name,
    wait_until,
)
from tests.integration.test_cli import SCRIPT


def catalog_cli(*args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    environ["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [str(SCRIPT), "catalog", *args], capture_output=True, text=True, timeout=120, env=environ, cwd=ROOT
    )


async def test_embedded_catalog_carried_over_to_kafka(kafka: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    name = unique_name("moved")
    embedded = Gateway(data, None).start()
    try:
        embedded.create_stream(
            name, [{"name": "id", "type": "string"}], mode="versioned_kv", primary_key="id"
        )
        made = embedded.request(
            "POST", "/api/v1beta2/apikeys", {"name": "edge", "permissions": [f"DATASOURCE:APPEND:{name}"]}
        )
        assert made.status == 201, made.body
        key = made.json()["api_key"]
    finally:
        assert embedded.stop() == 0
    exported = catalog_cli("export", "--data-dir", str(data))
    assert exported.returncode == 0, exported.stderr
    assert name in json.loads(exported.stdout)["streams"]
    export_file = tmp_path / "catalog.json"
    export_file.write_text(exported.stdout)

    gw = Gateway(data, kafka).start()
    try:
        assert "catalog import" in gw.log() and str(data / "catalog.json") in gw.log(), gw.log()
        assert gw.request("GET", f"/api/v1beta2/streams/{name}").status == 404
        target = ["--kafka-bootstrap", kafka, "--catalog-topic", gw.catalog_topic]
        imported = catalog_cli("import", str(export_file), *target)
        assert imported.returncode == 0, imported.stderr
        summary = json.loads(imported.stdout)
        assert summary["imported_streams"] == [name] and len(summary["imported_keys"]) == 1
        # the running gateway follows the catalog topic: the stream and the key arrive by themselves
        wait_until(
            lambda: gw.request("GET", f"/api/v1beta2/streams/{name}").status == 200,
            60,
            "the imported stream to reach the gateway",
        )
        reply = gw.request(
            "POST",
            f"/api/v1beta2/streams/{name}/ingest?wait=true",
            {"columns": ["id"], "data": [["a"], ["b"]]},
            key=key,
        )
        assert reply.status == 200, reply.body
        again = json.loads(catalog_cli("import", str(export_file), *target).stdout)
        assert again["imported_streams"] == [] and again["kept_streams"] == [name]
        kafka_export = catalog_cli("export", *target)
        assert kafka_export.returncode == 0, kafka_export.stderr
        assert name in json.loads(kafka_export.stdout)["streams"]
    finally:
        assert gw.stop() == 0
    topic = json.loads(exported.stdout)["streams"][name]["topic"]
    assert sorted(r.json()["id"] for r in await read_topic(kafka, topic)) == ["a", "b"]
    assert ADMIN_KEY not in exported.stdout and key not in exported.stdout
