"""The corpus's requests (data shared by the recorder and the replay test) and how a reply is reduced
to what the two proxies are compared on: status, media type, error codes and the reply's shape."""

from __future__ import annotations

import base64
import http.client
import json
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RECORDING = HERE / "karapace-6.2.0.json"
DIFFERENCES = HERE / "differences.json"

JSON_TOPIC = "corpus_json"  # values {"id": str, "n": int}; a stream with those columns in the gateway
BINARY_TOPIC = "corpus_bin"  # base64 text values; a stream with one string column in the gateway
PARTITIONS = 3
MISSING = "corpus_missing"  # exists nowhere
CLUSTER = "{cluster}"  # replaced by the first cluster id GET /v3/clusters names (else a fixed guess)

JSON_V2 = "application/vnd.kafka.json.v2+json"
BINARY_V2 = "application/vnd.kafka.binary.v2+json"
V2 = "application/vnd.kafka.v2+json"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass(frozen=True)
class Case:
    """One request. `body` is JSON (sent compact), `raw` a body sent as is; `auth=False` sends no
    credentials to the gateway either (Karapace runs without auth, so every other case gets a key)."""

    name: str
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    raw: str | None = None
    auth: bool = True

    def data(self) -> bytes | None:
        if self.raw is not None:
            return self.raw.encode()
        if self.body is None:
            return None
        return json.dumps(self.body, separators=(",", ":")).encode()


def _produce(name: str, body: Any, ctype: str | None = JSON_V2, topic: str = JSON_TOPIC, **kw: Any) -> Case:
    headers = {"Content-Type": ctype} if ctype else {}
    return Case(name, "POST", f"/topics/{topic}", headers | kw.pop("headers", {}), body, **kw)


def _bin(name: str, records: list[dict[str, Any]], **kw: Any) -> Case:
    return _produce(name, {"records": records}, BINARY_V2, BINARY_TOPIC, **kw)


ROW = {"id": "a", "n": 1}
ROWS = [{"value": {"id": c, "n": i}} for i, c in enumerate("bcd")]
ORIGIN = "https://app.example.com"

CASES: list[Case] = [
    # ---- v2 produce, json
    _produce("json_one", {"records": [{"value": ROW}]}),
    _produce("json_three", {"records": ROWS}),
    _produce("json_keyed", {"records": [{"key": "k1", "value": ROW}, {"key": "k2", "value": ROW}]}),
    _produce("json_key_object", {"records": [{"key": {"user": 7}, "value": ROW}]}),
    _produce(
        "json_partitioned", {"records": [{"partition": 2, "value": ROW}, {"partition": 0, "value": ROW}]}
    ),
    _produce(
        "json_headers", {"records": [{"value": ROW, "headers": [{"name": "trace", "value": b64("t-1")}]}]}
    ),
    _produce("json_schema_ids_ignored", {"records": [{"value": ROW}], "value_schema_id": 1}),
    _produce("json_partition_99", {"records": [{"value": ROW}, {"partition": 99, "value": ROW}]}),
    _produce("json_partition_string", {"records": [{"partition": "1", "value": ROW}]}),
    _produce("json_partition_negative", {"records": [{"partition": -1, "value": ROW}]}),
    _produce("json_value_null", {"records": [{"key": "k1", "value": None}]}),
    _produce("json_value_missing", {"records": [{"key": "k1"}]}),
    _produce("json_value_not_object", {"records": [{"value": 5}]}),
    _produce("json_value_other_fields", {"records": [{"value": {"id": "a", "n": 1, "extra": True}}]}),
    _produce("json_value_wrong_type", {"records": [{"value": {"id": "a", "n": "one"}}]}),
    _produce("json_record_unknown_field", {"records": [{"value": ROW, "colour": "red"}]}),
    # ---- v2 produce, binary
    _bin("binary_one", [{"value": b64("hello")}]),
    _bin("binary_keyed", [{"key": b64("k1"), "value": b64("hello")}]),
    _bin("binary_partitioned", [{"partition": 1, "value": b64("hello")}]),
    _bin("binary_partition_99", [{"value": b64("a")}, {"partition": 99, "value": b64("b")}]),
    _bin("binary_bad_base64", [{"value": "not base64!"}]),
    _bin("binary_bad_base64_key", [{"key": "%%%", "value": b64("hello")}]),
    _bin("binary_value_number", [{"value": 5}]),
    _bin("binary_value_null", [{"key": b64("k1"), "value": None}]),
    # ---- media types
    _produce("ctype_v2_no_format", {"records": [{"value": b64("hello")}]}, V2, BINARY_TOPIC),
    _produce(
        "ctype_application_json", {"records": [{"value": b64("hello")}]}, "application/json", BINARY_TOPIC
    ),
    _produce("ctype_json_v1", {"records": [{"value": ROW}]}, "application/vnd.kafka.json.v1+json"),
    _produce("ctype_json_charset", {"records": [{"value": ROW}]}, JSON_V2 + "; charset=utf-8"),
    _produce("ctype_missing", {"records": [{"value": ROW}]}, None),
    _produce("ctype_text_plain", {"records": [{"value": ROW}]}, "text/plain"),
    _produce("ctype_octet_stream", {"records": [{"value": ROW}]}, "application/octet-stream"),
    _produce("ctype_avro_no_schema", {"records": [{"value": ROW}]}, "application/vnd.kafka.avro.v2+json"),
    _produce(
        "ctype_protobuf_no_schema", {"records": [{"value": ROW}]}, "application/vnd.kafka.protobuf.v2+json"
    ),
    _produce(
        "ctype_jsonschema_no_schema",
        {"records": [{"value": ROW}]},
        "application/vnd.kafka.jsonschema.v2+json",
    ),
    _produce("accept_text_html_produce", {"records": [{"value": ROW}]}, headers={"Accept": "text/html"}),
    _produce("accept_v2_produce", {"records": [{"value": ROW}]}, headers={"Accept": V2}),
    # ---- malformed bodies
    _produce("body_not_json", None, raw='{"records": [{"value"'),
    _produce("body_empty", None, raw=""),
    _produce("body_array", [{"value": ROW}]),
    _produce("body_string", "records"),
    _produce("body_no_records", {}),
    _produce("body_records_empty", {"records": []}),
    _produce("body_records_object", {"records": {"value": ROW}}),
    _produce("body_records_null", {"records": None}),
    _produce("body_record_not_object", {"records": [1]}),
    _produce("body_record_null", {"records": [None]}),
    # ---- topics that do not exist, and partition produce
    _produce("produce_missing_topic", {"records": [{"value": ROW}]}, topic=MISSING),
    Case(
        "partition_produce_json",
        "POST",
        f"/topics/{JSON_TOPIC}/partitions/1",
        {"Content-Type": JSON_V2},
        {"records": [{"value": ROW}]},
    ),
    Case(
        "partition_produce_binary",
        "POST",
        f"/topics/{BINARY_TOPIC}/partitions/0",
        {"Content-Type": BINARY_V2},
        {"records": [{"value": b64("hello")}]},
    ),
    Case(
        "partition_produce_99",
        "POST",
        f"/topics/{JSON_TOPIC}/partitions/99",
        {"Content-Type": JSON_V2},
        {"records": [{"value": ROW}]},
    ),
    Case(
        "partition_produce_not_a_number",
        "POST",
        f"/topics/{JSON_TOPIC}/partitions/x",
        {"Content-Type": JSON_V2},
        {"records": [{"value": ROW}]},
    ),
    Case(
        "partition_produce_missing_topic",
        "POST",
        f"/topics/{MISSING}/partitions/0",
        {"Content-Type": JSON_V2},
        {"records": [{"value": ROW}]},
    ),
    # ---- reads
    Case("root", "GET", "/"),
    Case("brokers", "GET", "/brokers"),
    Case("topics", "GET", "/topics"),
    Case("topic_json", "GET", f"/topics/{JSON_TOPIC}"),
    Case("topic_missing", "GET", f"/topics/{MISSING}"),
    Case("partitions", "GET", f"/topics/{JSON_TOPIC}/partitions"),
    Case("partitions_missing_topic", "GET", f"/topics/{MISSING}/partitions"),
    Case("partition_0", "GET", f"/topics/{JSON_TOPIC}/partitions/0"),
    Case("partition_99", "GET", f"/topics/{JSON_TOPIC}/partitions/99"),
    Case("partition_offsets", "GET", f"/topics/{JSON_TOPIC}/partitions/0/offsets"),
    Case("topics_accept_v2", "GET", "/topics", {"Accept": V2}),
    Case("topics_accept_json", "GET", "/topics", {"Accept": "application/json"}),
    Case("topics_accept_any", "GET", "/topics", {"Accept": "*/*"}),
    Case("topics_accept_text_html", "GET", "/topics", {"Accept": "text/html"}),
    Case("topics_accept_v1", "GET", "/topics", {"Accept": "application/vnd.kafka.v1+json"}),
    Case("topic_delete", "DELETE", f"/topics/{JSON_TOPIC}"),
    Case(
        "consumer_create",
        "POST",
        "/consumers/corpus_group",
        {"Content-Type": V2},
        {"name": "c1", "format": "json", "auto.offset.reset": "earliest"},
    ),
    # ---- v3
    Case("v3_clusters", "GET", "/v3/clusters"),
    Case("v3_cluster", "GET", f"/v3/clusters/{CLUSTER}"),
    Case("v3_topics", "GET", f"/v3/clusters/{CLUSTER}/topics"),
    Case("v3_topic", "GET", f"/v3/clusters/{CLUSTER}/topics/{JSON_TOPIC}"),
    Case("v3_partitions", "GET", f"/v3/clusters/{CLUSTER}/topics/{JSON_TOPIC}/partitions"),
    Case(
        "v3_records_one",
        "POST",
        f"/v3/clusters/{CLUSTER}/topics/{JSON_TOPIC}/records",
        {"Content-Type": "application/json"},
        {"value": {"type": "JSON", "data": ROW}},
    ),
    Case(
        "v3_records_empty",
        "POST",
        f"/v3/clusters/{CLUSTER}/topics/{JSON_TOPIC}/records",
        {"Content-Type": "application/json"},
        raw="",
    ),
    # ---- CORS
    Case(
        "cors_preflight_topics",
        "OPTIONS",
        "/topics",
        {"Origin": ORIGIN, "Access-Control-Request-Method": "GET"},
    ),
    Case(
        "cors_preflight_produce",
        "OPTIONS",
        f"/topics/{JSON_TOPIC}",
        {
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    ),
    Case("cors_get_topics", "GET", "/topics", {"Origin": ORIGIN}),
    # ---- credentials: Karapace's default is none
    _produce("no_credentials_produce", {"records": [{"value": ROW}]}, auth=False),
    Case("no_credentials_topics", "GET", "/topics", auth=False),
]


def send(
    base_url: str, case: Case, cluster: str, extra: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Send `case` exactly as listed: http.client adds only Host, Accept-Encoding and Content-Length
    (urllib would add a form Content-Type to a body without one, hiding the "no Content-Type" case)."""
    url = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=60)
    try:
        data = case.data()
        if data is None and case.method in ("POST", "PUT"):
            data = b""
        conn.request(case.method, case.path.replace(CLUSTER, cluster), data, case.headers | (extra or {}))
        reply = conn.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    finally:
        conn.close()


def cluster_id(base_url: str, auth: dict[str, str] | None) -> str:
    """The cluster id the proxy names first in GET /v3/clusters, else the gateway's fixed one."""
    status, _, body = send(base_url, Case("v3", "GET", "/v3/clusters"), "", auth)
    try:
        return str(json.loads(body)["data"][0]["cluster_id"]) if status == 200 else "ingest-gateway"
    except (ValueError, KeyError, IndexError, TypeError):
        return "ingest-gateway"


def shape(value: Any) -> Any:
    """`value` with every scalar replaced by its type's name (offsets, ids and messages vary);
    a list of scalars becomes the sorted set of their types (its length varies with the broker)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        items = [shape(v) for v in value]
        if all(not isinstance(v, dict | list) for v in value):
            return sorted(set(items), key=str)
        return items
    if value is None:
        return None
    return {bool: "bool", int: "int", float: "float", str: "str"}[type(value)]


def summary(case: Case, status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """What the comparison looks at, from one reply to `case` (CORS headers only when it sent an
    Origin: Karapace adds them to every reply, a browser reads them only then)."""
    ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    media = ctype.split(";")[0].strip().lower()
    out: dict[str, Any] = {"status": status, "content_type": media}
    if "Origin" in case.headers:
        out["cors_headers"] = sorted(k.lower() for k in headers if k.lower().startswith("access-control-"))
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        out["body"] = "not json"
        return out
    out["error_code"] = doc.get("error_code") if isinstance(doc, dict) else None
    offsets = doc.get("offsets") if isinstance(doc, dict) else None
    if isinstance(offsets, list):
        out["record_error_codes"] = [o.get("error_code") if isinstance(o, dict) else None for o in offsets]
    out["shape"] = shape(doc)
    return out


def compare(recorded: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """The aspects of `got` that differ from `recorded`, one line each (empty: the same)."""
    lines = []
    for aspect in (
        "status",
        "content_type",
        "error_code",
        "record_error_codes",
        "shape",
        "body",
        "cors_headers",
    ):
        want, have = recorded.get(aspect), got.get(aspect)
        if want != have:
            lines.append(f"{aspect}: karapace {json.dumps(want)} | gateway {json.dumps(have)}")
    return lines
