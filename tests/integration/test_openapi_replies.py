"""Real replies of a real gateway checked against the OpenAPI document it serves: every status it
answers is documented for that operation, and every JSON body matches the documented schema."""

from __future__ import annotations

import re
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from tests.integration.harness import Gateway, Reply, http, unique_name

COLUMNS = [{"name": "id", "type": "string"}, {"name": "n", "type": "int64"}]


class Checker:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.routes = [(re.compile("^" + re.sub(r"\{\w+\}", "[^/]+", path) + "$"), path)
                       for path in spec["paths"]]
        self.checked: set[tuple[str, str, int]] = set()

    def check(self, method: str, url_path: str, reply: Reply) -> None:
        path = url_path.split("?", 1)[0]
        templates = [t for rx, t in self.routes if rx.match(path)
                     and method.lower() in self.spec["paths"][t]]
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


def call(gw: Gateway, checker: Checker, method: str, path: str, body: Any = None,
         **kw: Any) -> Reply:
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
    assert call(gw, checker, "POST", "/api/v1beta2/streams",
                {"name": name, "columns": COLUMNS}).status == 201
    assert call(gw, checker, "POST", "/api/v1beta2/streams",
                {"name": name, "columns": COLUMNS}).status == 409
    assert call(gw, checker, "POST", "/api/v1beta2/streams",
                {"name": "1bad", "columns": COLUMNS}).status == 400
    assert call(gw, checker, "GET", f"/ws1/api/v1beta2/streams/{name}").status == 200
    assert call(gw, checker, "GET", f"/api/v1beta2/streams/{name}x").status == 404
    assert call(gw, checker, "GET", "/api/v1beta2/streams", key="no-such-key-0123456789"
                ).status == 401
    ingest = f"/api/v1beta2/streams/{name}/ingest"
    ndjson = {"Content-Type": "application/x-ndjson"}
    assert call(gw, checker, "POST", ingest + "?wait=true", '{"id": "a", "n": 1}\n',
                headers=ndjson).status == 200
    assert call(gw, checker, "POST", ingest, '{"id": "a", "n": 1}\n', headers=ndjson).status == 202
    bad = call(gw, checker, "POST", ingest, '{"id": "a", "n": "x"}\n', headers=ndjson)
    assert bad.status == 400 and bad.json()["row"] == 0 and bad.json()["column"] == "n"
    assert call(gw, checker, "POST", ingest, "x", headers={"Content-Type": "application/xml"}
                ).status == 415
    assert call(gw, checker, "POST", ingest + "?format=compact",
                {"columns": ["id", "n"], "data": [["b", 2]]}).status == 202
    created = call(gw, checker, "POST", "/api/v1beta2/apikeys",
                   {"name": "doc", "expire_in": "1h", "permissions": ["DATASOURCE:APPEND"]})
    assert created.status == 201
    limited = created.json()["api_key"]
    assert call(gw, checker, "POST", "/api/v1beta2/apikeys", {"expire_in": "soon"}).status == 400
    assert call(gw, checker, "GET", "/api/v1beta2/apikeys").status == 200
    assert call(gw, checker, "GET", "/api/v1beta2/apikeys", key=limited).status == 403
    assert call(gw, checker, "DELETE", f"/api/v1beta2/streams/{name}", key=limited).status == 403
    assert call(gw, checker, "DELETE", f"/api/v1beta2/apikeys/{created.json()['id']}"
                ).status == 204
    assert call(gw, checker, "DELETE", f"/api/v1beta2/apikeys/{created.json()['id']}"
                ).status == 404
    assert call(gw, checker, "DELETE", f"/api/v1beta2/streams/{name}").status == 204
    assert call(gw, checker, "DELETE", f"/api/v1beta2/streams/{name}").status == 404
    assert len(checker.checked) >= 25
