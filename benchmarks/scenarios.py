"""Scenarios S1-S8 of issue 4 and S9 (the REST proxy route, issue 13), and their goals (issue 15's
where it set new ones: S2 ≥ 0.45, S4 ≥ 0.5), each checked against the same run's ceilings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks.payloads import Payload

NDJSON100 = Payload("ndjson", 100)
ONE_ROW = Payload("ndjson", 1)
COMPACT1000 = Payload("compact", 1000)
NDJSON1000 = Payload("ndjson", 1000)
NDJSON1000GZ = Payload("ndjson", 1000, gzip=True)
RESTPROXY100 = Payload("restproxy", 100)
OVERLOAD_FACTOR = 2.0
RSS_LIMIT_MB = 300.0


@dataclass(frozen=True, slots=True)
class Scenario:
    """One row of the scenario table."""

    id: str
    load: str
    goal: str
    payload: Payload
    wait: bool = False
    connections: int = 64
    streams: int = 1
    workers: int = 1
    overload: bool = False  # open loop at OVERLOAD_FACTOR x S1's knee
    companion: Payload | None = None  # a second run to compare against (S5: the same, uncompressed)
    route: str = "timeplus"  # or "restproxy": POST /topics/{stream} (always waits for Kafka)


SCENARIOS: dict[str, Scenario] = {
    s.id: s
    for s in [
        Scenario(
            "S1",
            "NDJSON, 100 rows of ~150 B, 8 typed columns, wait=false, 64 connections",
            "rows/s delivered ≥ 0.6 x ceiling (2)",
            NDJSON100,
        ),
        Scenario("S2", "as S1 with wait=true", "≥ 0.45 x ceiling (2), p99 ≤ 50 ms", NDJSON100, wait=True),
        Scenario("S3", "one row per request, wait=false", "requests/s ≥ 0.5 x ceiling (1)", ONE_ROW),
        Scenario(
            "S4",
            "compact format, 1,000 rows per request",
            "rows/s ≥ 0.5 x ceiling (2) on the same payload",
            COMPACT1000,
        ),
        Scenario(
            "S5",
            "gzip NDJSON, 1,000 rows per request",
            "report, with the cost of decompression shown",
            NDJSON1000GZ,
            companion=NDJSON1000,
        ),
        Scenario(
            "S6",
            "overload: offered rate 2 x S1's knee",
            "zero 5xx, excess answered with 429, delivered == accepted, peak RSS ≤ 300 MB",
            NDJSON100,
            connections=256,
            overload=True,
        ),
        Scenario("S7", "200 streams, requests spread over them", "rows/s ≥ 0.8 x S1", NDJSON100, streams=200),
        Scenario(
            "S8",
            "--workers 2 (or two processes)",
            "report scaling vs S1, with where the cores went",
            NDJSON100,
            workers=2,
        ),
        Scenario(
            "S9",
            "Kafka REST Proxy v2 produce (POST /topics/{topic}, json), 100 records per "
            "request, 64 connections (the proxy API always waits for Kafka)",
            "report rows/s vs S1 and S2",
            RESTPROXY100,
            wait=True,
            route="restproxy",
        ),
    ]
}


def decode_ceiling_payloads(ids: list[str]) -> list[Payload]:
    """The payloads ceiling (2) is measured on for these scenarios."""
    out: list[Payload] = []
    for sid in ids:
        s = SCENARIOS[sid]
        for p in (s.payload, s.companion):
            if p is not None and p not in out and p != ONE_ROW:
                out.append(p)
    return out


def produce_ceiling_modes(ids: list[str]) -> list[bool]:
    """The `wait` modes ceiling (5) is measured in for these scenarios (S1: false, S2: true)."""
    return [SCENARIOS[sid].wait for sid in ("S1", "S2") if sid in ids]


def produce_ceiling_key(wait: bool) -> str:
    """The key of ceiling (5)'s figures for one `wait` mode (on S1's payload)."""
    return f"{NDJSON100.key}{'-wait' if wait else ''}"


def _check(
    name: str, value: float | None, limit: float | None, ok: bool | None, unit: str = ""
) -> dict[str, Any]:
    return {"name": name, "value": value, "limit": limit, "ok": ok, "unit": unit}


def _ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value is not None and base else None


def evaluate(
    s: Scenario, m: dict[str, Any], ceilings: dict[str, Any], results: dict[str, Any]
) -> dict[str, Any]:
    """The goal's checks (value, limit, ok) and whether it is met. A FAILED run never meets it."""
    decode = ceilings.get("decode", {}).get(s.payload.key, {})
    c2 = decode.get("rows_per_s")
    c1 = ceilings.get("hello", {}).get("requests_per_s")
    rows = m.get("rows_delivered_per_s")
    p99 = (m.get("latency_ms") or {}).get("p99")
    s1 = results.get("S1", {}).get("measurement", {}).get("rows_delivered_per_s")
    checks: list[dict[str, Any]] = []
    reported = False
    if s.id == "S1":
        checks.append(_check("rows/s ÷ ceiling (2)", _ratio(rows, c2), 0.6, None))
    elif s.id == "S2":
        checks.append(_check("rows/s ÷ ceiling (2)", _ratio(rows, c2), 0.45, None))
        checks.append(_check("p99 latency", p99, 50.0, p99 is not None and p99 <= 50.0, "ms"))
    elif s.id == "S3":
        rps = m.get("ok_requests_per_s") if m.get("status") == "ok" else None
        checks.append(_check("requests/s ÷ ceiling (1)", _ratio(rps, c1), 0.5, None))
    elif s.id == "S4":
        checks.append(_check("rows/s ÷ ceiling (2) (same payload)", _ratio(rows, c2), 0.5, None))
    elif s.id == "S5":
        reported = True
    elif s.id == "S6":
        answered = m.get("requests_answered", 0)
        offered = m.get("offered_requests") or 0
        checks += [
            _check("5xx replies", m["count_5xx"], 0, m["count_5xx"] == 0),
            _check("client errors/timeouts", m["count_errors"], 0, m["count_errors"] == 0),
            _check("429 replies (the excess)", m["count_429"], None, m["count_429"] > 0),
            _check(
                "answered ÷ offered",
                _ratio(answered, offered),
                0.95,
                offered > 0 and answered >= 0.95 * offered,
            ),
            _check(
                "delivered - accepted",
                (m["rows_delivered"] or 0) - m["rows_accepted"],
                0,
                m["rows_delivered"] is not None and m["rows_delivered"] >= m["rows_accepted"],
            ),
            _check(
                "peak RSS",
                m["gateway_peak_rss_mb"],
                RSS_LIMIT_MB,
                m["gateway_peak_rss_mb"] <= RSS_LIMIT_MB,
                "MB",
            ),
        ]
    elif s.id == "S7":
        checks.append(
            _check(
                "rows/s ÷ S1 rows/s",
                _ratio(rows, s1),
                0.8,
                None if s1 is None else (rows is not None and rows >= 0.8 * s1),
            )
        )
    elif s.id in ("S8", "S9"):
        reported = True
    for c in checks:
        if c["ok"] is None and c["value"] is not None and c["limit"] is not None:
            c["ok"] = c["value"] >= c["limit"]
    if m.get("status") != "ok":
        status = "FAILED"
    elif reported:
        status = "reported"
    elif any(
        c["value"] is None and c["limit"] is not None and c["name"] != "429 replies (the excess)"
        for c in checks
    ):
        status = "not checked"  # a ceiling or S1 is missing from this run
    else:
        status = "met" if all(c["ok"] for c in checks) else "not met"
    return {
        "text": s.goal,
        "status": status,
        "checks": checks,
        "ceiling_2_rows_per_s": c2,
        "ceiling_1_requests_per_s": c1,
    }
