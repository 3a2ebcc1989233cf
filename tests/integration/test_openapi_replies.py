"""Real replies of a real gateway checked against the OpenAPI document it serves: every status it
answers is documented for that operation, and every JSON body matches the documented schema."""

from __future__ import annotations

import re
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from tests.integration.harness import ADMIN_KEY, Gateway, Reply, http, unique_name

COLUMNS = [{"name": "id", "type": "string"}, {"name": "n", "type": "int64"}]


class Checker:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.routes = [
            (re.compile("^" + re.sub(r"\{\w+\}", "[^/]+", path) + "$"), path) for path in spec["paths"]
        ]
        self.checked: set[tuple[str, str, int]] = set()

    def check(self, method: str, url_path: str, reply: Reply) -> None:
        path = url_path.split("?", 1)[0]
        templates = [t for rx, t in self.routes if rx.match(path) and method.lower() in self.spec["paths"][t]]
        assert len(templates) == 1, (method, path, templates)
        op = self.spec["paths"][templates[0]][method.lower()]
        documented = op["responses"].get(str(reply.status))
        assert documented is not None, f"{method} {templates[0]} answered undocumented {reply.status}"
        self.checked.add((method, templates[0], reply.status))
        content = documented.get("content")
        if reply.status == 204:
            assert content is None and reply.body == b""
            return
        assert content is not None
        media = reply.headers.get("Content-Type", "").split(";")[0]
        assert media in content, (method, path, media, list(content))
        if media == "application/json":
            schema = {**content[media]["schema"], "components": self.spec["components"]}
            errors = [e.message for e in Draft202012Validator(schema).iter_errors(reply.json())]
            assert not errors, (method, templates[0], reply.status, errors)


@pytest.fixture(scope="module")
def checker(gateway: Gateway) -> Checker:
    reply = http("GET", gateway.url + "/openapi.json")
    assert reply.status == 200
    return Checker(reply.json())


def call(gw: Gateway, checker: Checker, method: str, path: str, body: Any = None, **kw: Any) -> Reply:
    reply = gw.request(method, path, body, **kw)
    checker.check(method, path, reply)
    return reply


def test_replies_match_the_served_document(gateway: Gateway, checker: Checker) -> None:
    gw = gateway
    for path in ("/healthz", "/readyz", "/openapi.json", "/metrics"):
        call(gw, checker, "GET", path, key=None)
    name = unique_name("doc")
    for base in ("/api/v1beta2", "/ws1/api/v1beta1"):
        call(gw, checker, "GET", f"{base}/streams")
    assert call(gw, checker, "POST", "/api/v1beta2/streams", {"name": name, "columns": COLUMNS}).status == 201
    assert call(gw, checker, "POST", "/api/v1beta2/streams", {"name": name, "columns": COLUMNS}).status == 409
    assert (
        call(gw, checker, "POST", "/api/v1beta2/streams", {"name": "1bad", "columns": COLUMNS}).status == 400
    )
    assert call(gw, checker, "GET", f"/ws1/api/v1beta2/streams/{name}").status == 200
    assert call(gw, checker, "GET", f"/api/v1beta2/streams/{name}x").status == 404
    assert call(gw, checker, "GET", "/api/v1beta2/streams", key="no-such-key-0123456789").status == 401
    ingest = f"/api/v1beta2/streams/{name}/ingest"
    ndjson = {"Content-Type": "application/x-ndjson"}
    assert (
        call(gw, checker, "POST", ingest + "?wait=true", '{"id": "a", "n": 1}\n', headers=ndjson).status
        == 200
    )
    assert call(gw, checker, "POST", ingest, '{"id": "a", "n": 1}\n', headers=ndjson).status == 202
    bad = call(gw, checker, "POST", ingest, '{"id": "a", "n": "x"}\n', headers=ndjson)
    assert bad.status == 400 and bad.json()["row"] == 0 and bad.json()["column"] == "n"
    assert call(gw, checker, "POST", ingest, "x", headers={"Content-Type": "application/xml"}).status == 415
    assert (
        call(
            gw, checker, "POST", ingest + "?format=compact", {"columns": ["id", "n"], "data": [["b", 2]]}
        ).status
        == 202
    )
    created = call(
        gw,
        checker,
        "POST",
        "/api/v1beta2/apikeys",
        {"name": "doc", "expire_in": "1h", "permissions": ["DATASOURCE:APPEND"]},
    )
    assert created.status == 201
    limited = created.json()["api_key"]
    assert call(gw, checker, "POST", "/api/v1beta2/apikeys", {"expire_in": "soon"}).status == 400
    assert call(gw, checker, "GET", "/api/v1beta2/apikeys").status == 200
    assert call(gw, checker, "GET", "/api/v1beta2/apikeys", key=limited).status == 403
    assert call(gw, checker, "DELETE", f"/api/v1beta2/streams/{name}", key=limited).status == 403
    assert call(gw, checker, "DELETE", f"/api/v1beta2/apikeys/{created.json()['id']}").status == 204
    assert call(gw, checker, "DELETE", f"/api/v1beta2/apikeys/{created.json()['id']}").status == 404
    assert call(gw, checker, "DELETE", f"/api/v1beta2/streams/{name}").status == 204
    assert call(gw, checker, "DELETE", f"/api/v1beta2/streams/{name}").status == 404
    assert len(checker.checked) >= 25


def test_other_dialects_replies_match_the_served_document(gateway: Gateway, checker: Checker) -> None:
    gw = gateway
    name = unique_name("doc")
    assert call(gw, checker, "POST", "/api/v1beta2/streams", {"name": name, "columns": COLUMNS}).status == 201
    base = f"/api/v1beta2/streams/{name}"
    assert call(gw, checker, "PATCH", base, {"description": "d"}).status == 200
    assert call(gw, checker, "PUT", base, {"archived": False}).status == 200
    assert call(gw, checker, "GET", base + "/stats").status == 200
    assert call(gw, checker, "GET", base + "/stats?historyDays=2").status == 200
    assert call(gw, checker, "GET", base + "/stats?historyDays=9").status == 400
    # Tinybird: token in the header or the query; invalid rows go to quarantine (still 200/202).
    ok = call(
        gw,
        checker,
        "POST",
        f"/v0/events?name={name}&wait=true",
        '{"id": "a", "n": 1}\n{"id": "b", "n": "x"}\n',
        key=None,
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert ok.status == 200 and ok.json() == {"successful_rows": 1, "quarantined_rows": 1}
    assert (
        call(
            gw,
            checker,
            "POST",
            f"/v0/events?name={name}&token={ADMIN_KEY}",
            '{"id": "c", "n": 2}\n',
            key=None,
        ).status
        == 202
    )
    assert call(gw, checker, "POST", "/v0/events", '{"id": "c"}\n').status == 400
    assert (
        call(gw, checker, "POST", f"/v0/events?name={name}x&token={ADMIN_KEY}", "{}\n", key=None).status
        == 404
    )
    assert (
        call(gw, checker, "POST", f"/v0/events?name={name}&token=wrong-0123456789", "{}\n", key=None).status
        == 403
    )
    limited = call(gw, checker, "POST", "/api/v1beta2/apikeys", {"name": "slow", "rate_limit": 1})
    slow = limited.json()["api_key"]
    statuses = {
        call(
            gw, checker, "POST", f"/v0/events?name={name}&token={slow}", '{"id": "d", "n": 3}\n', key=None
        ).status
        for _ in range(3)
    }
    assert 429 in statuses
    # Data sources.
    ds = unique_name("ds")
    assert (
        call(
            gw,
            checker,
            "POST",
            "/api/v1beta2/streams",
            {
                "name": ds,
                "mode": "versioned_kv",
                "primary_key": "timestamp, name",
                "columns": [
                    {"name": "timestamp", "type": "int64"},
                    {"name": "name", "type": "string"},
                    {"name": "value", "type": "float64"},
                ],
            },
        ).status
        == 201
    )
    bearer = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"}
    record = {"timestamp": 1718841600, "name": "orders", "value": 42}
    assert (
        call(
            gw,
            checker,
            "POST",
            "/v1/data_sources/ingest",
            {"data_source": ds, "records": [record]},
            key=None,
            headers=bearer,
        ).status
        == 204
    )
    assert (
        call(
            gw,
            checker,
            "POST",
            "/v1/data_sources/ingest",
            {"data_source": ds, "records": [{**record, "value": "x"}]},
            key=None,
            headers=bearer,
        ).status
        == 422
    )
    assert call(gw, checker, "POST", "/v1/data_sources/ingest", "{", key=None, headers=bearer).status == 400
    assert (
        call(
            gw,
            checker,
            "POST",
            "/v1/data_sources/ingest",
            {"data_source": ds + "x", "records": []},
            key=None,
            headers=bearer,
        ).status
        == 404
    )
    assert (
        call(
            gw, checker, "POST", "/v1/data_sources/ingest", {"data_source": ds, "records": []}, key=None
        ).status
        == 401
    )
    assert call(gw, checker, "PATCH", f"/api/v1beta2/streams/{ds}", {"archived": True}).status == 200
    assert (
        call(
            gw,
            checker,
            "POST",
            "/v1/data_sources/ingest",
            {"data_source": ds, "records": [record]},
            key=None,
            headers=bearer,
        ).status
        == 409
    )
