"""The accounting harness: load with uniquely identified rows, a ledger of every reply, and the
comparison of that ledger with what the topic really holds afterwards.

Every row carries a unique `id`. The load driver (asyncio + aiohttp client, in its own thread so
that a test can stop and start brokers and gateways meanwhile) records per request the reply
(status, or `timeout` / `connection` when there was none) and the ids it carried. `account()` reads
the figures the issue asks for; `record()` writes them into tests/reliability/reports/REPORT.md
(ignored by git), or where GATEWAY_RELIABILITY_REPORT points (e.g. at the tracked
tests/reliability/REPORT.md, to refresh it on purpose).

Dialects: a `Dialect` builds one request for a list of ids and finds the id in a Kafka record.
Every dialect of the gateway is here (`DIALECTS`): Timeplus NDJSON and compact, Tinybird
/v0/events, /v1/data_sources/ingest; a new dialect adds a class with the same three methods.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from tests.integration.harness import Record

# A test run writes nothing tracked: the report goes to an ignored folder unless asked otherwise.
REPORT = Path(
    os.environ.get("GATEWAY_RELIABILITY_REPORT") or Path(__file__).with_name("reports") / "REPORT.md"
)
RUNNING: list[LoadDriver] = []  # drivers not stopped yet (a fixture stops them after each test)
ACKED = frozenset({200, 202, 204})
# Replies that promise "nothing written": every 4xx (429 and 408 included) and 503.
COLUMNS = [
    {"name": "id", "type": "string"},
    {"name": "seq", "type": "int64"},
    {"name": "pad", "type": "string"},
]


def promises_nothing_written(outcome: int | str) -> bool:
    """True for replies whose meaning is "nothing of this request was written"."""
    return isinstance(outcome, int) and (400 <= outcome < 500 or outcome == 503)


class Dialect(Protocol):
    """How one API dialect sends rows, and how a row's id is found in its Kafka record."""

    name: str

    def stream_definition(self) -> dict[str, Any]:
        """The create-stream request body fields (columns, mode, …) the dialect needs."""
        ...

    def request(self, stream: str, ids: list[str], wait: bool) -> tuple[str, str, bytes, dict[str, str]]:
        """(method, path with query, body, headers) of a request carrying these ids."""
        ...

    def row_id(self, record: Record) -> str:
        """The id of the row a Kafka record holds."""
        ...


def _rows(ids: list[str], pad: str) -> list[dict[str, Any]]:
    return [{"id": i, "seq": n, "pad": pad} for n, i in enumerate(ids)]


@dataclass
class TimeplusNdjson:
    """`POST /api/v1beta2/streams/{name}/ingest` with an NDJSON (streaming) body."""

    pad: str = "x" * 100
    name: str = "timeplus-ndjson"

    def stream_definition(self) -> dict[str, Any]:
        return {"columns": COLUMNS}

    def request(self, stream: str, ids: list[str], wait: bool) -> tuple[str, str, bytes, dict[str, str]]:
        body = "".join(json.dumps(r) + "\n" for r in _rows(ids, self.pad)).encode()
        return (
            "POST",
            f"/api/v1beta2/streams/{stream}/ingest?wait={str(wait).lower()}",
            body,
            {"Content-Type": "application/x-ndjson"},
        )

    def row_id(self, record: Record) -> str:
        return str(json.loads(record.value)["id"])


@dataclass
class TimeplusCompact:
    """`POST /api/v1beta2/streams/{name}/ingest` with a compact `{"columns", "data"}` body."""

    pad: str = "x" * 100
    name: str = "timeplus-compact"

    def stream_definition(self) -> dict[str, Any]:
        return {"columns": COLUMNS}

    def request(self, stream: str, ids: list[str], wait: bool) -> tuple[str, str, bytes, dict[str, str]]:
        body = json.dumps(
            {"columns": ["id", "seq", "pad"], "data": [[i, n, self.pad] for n, i in enumerate(ids)]}
        ).encode()
        return (
            "POST",
            f"/api/v1beta2/streams/{stream}/ingest?wait={str(wait).lower()}",
            body,
            {"Content-Type": "application/json"},
        )

    def row_id(self, record: Record) -> str:
        return str(json.loads(record.value)["id"])


@dataclass
class TinybirdEvents:
    """`POST /v0/events?name=…` (Tinybird Events API), NDJSON; 202, or 200 with wait=true."""

    pad: str = "x" * 100
    name: str = "tinybird-events"

    def stream_definition(self) -> dict[str, Any]:
        return {"columns": COLUMNS}

    def request(self, stream: str, ids: list[str], wait: bool) -> tuple[str, str, bytes, dict[str, str]]:
        body = "".join(json.dumps(r) + "\n" for r in _rows(ids, self.pad)).encode()
        return (
            "POST",
            f"/v0/events?name={stream}&wait={str(wait).lower()}",
            body,
            {"Content-Type": "application/x-ndjson"},
        )

    def row_id(self, record: Record) -> str:
        return str(json.loads(record.value)["id"])


@dataclass
class DataSourceIngest:
    """`POST /v1/data_sources/ingest` (time-series data sources): always acknowledged (204). The
    row id travels as the series `name`; `wait` does not apply."""

    name: str = "data-sources"

    def stream_definition(self) -> dict[str, Any]:
        return {
            "columns": [
                {"name": "timestamp", "type": "int64"},
                {"name": "name", "type": "string"},
                {"name": "value", "type": "float64"},
            ],
            "mode": "versioned_kv",
            "primary_key": "timestamp, name",
        }

    def request(self, stream: str, ids: list[str], wait: bool) -> tuple[str, str, bytes, dict[str, str]]:
        body = json.dumps(
            {
                "data_source": stream,
                "records": [
                    {"timestamp": 1_700_000_000 + n, "name": i, "value": n * 0.5} for n, i in enumerate(ids)
                ],
            }
        ).encode()
        return "POST", "/v1/data_sources/ingest", body, {"Content-Type": "application/json"}

    def row_id(self, record: Record) -> str:
        return str(json.loads(record.value)["name"])


DIALECTS: tuple[Dialect, ...] = (TimeplusNdjson(), TimeplusCompact(), TinybirdEvents(), DataSourceIngest())


@dataclass
class Outcome:
    """One request: the ids it carried, whether it waited, and what came back."""

    ids: list[str]
    wait: bool
    reply: int | str  # HTTP status, or "timeout" / "connection" when no reply came
    sent: float  # time.monotonic() when sent
    took: float  # seconds until the reply (or the failure)
    retry_after: str | None = None


@dataclass
class Ledger:
    """Every request a load driver made (thread-safe appends)."""

    outcomes: list[Outcome] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def acked_rows(self) -> int:
        return sum(len(o.ids) for o in self.snapshot() if o.reply in ACKED)

    def count(self, reply: int | str, *, since: float = 0.0) -> int:
        """Requests answered with `reply`, sent at or after `since` (monotonic)."""
        return sum(1 for o in self.snapshot() if o.reply == reply and o.sent >= since)

    def replies(self) -> Counter[str]:
        return Counter(str(o.reply) for o in self.snapshot())


class LoadDriver:
    """Concurrent clients posting batches of uniquely identified rows until stopped.

    `wait` is decided per request by `wait_for(client, n)`; ids are `<prefix>-<client>-<n>-<row>`.
    A request that gets no reply within `request_timeout` is recorded as "timeout".
    """

    def __init__(
        self,
        base_url: str,
        key: str,
        stream: str,
        dialect: Dialect,
        *,
        prefix: str,
        clients: int = 8,
        rows_per_request: int = 50,
        request_timeout: float = 30.0,
        wait_for: Callable[[int, int], bool] = lambda c, n: False,
        max_requests: int = 1_000_000,
        pause_s: float = 0.0,
    ) -> None:
        self.base_url = base_url
        self.key = key
        self.stream = stream
        self.dialect = dialect
        self.prefix = prefix
        self.clients = clients
        self.rows_per_request = rows_per_request
        self.request_timeout = request_timeout
        self.wait_for = wait_for
        self.max_requests = max_requests
        self.pause_s = pause_s
        self.ledger = Ledger()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> LoadDriver:
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._main()), daemon=True, name="load-driver"
        )
        self._thread.start()
        RUNNING.append(self)
        return self

    def stop(self, timeout: float = 120.0) -> Ledger:
        """Stop the clients after their current request; the ledger of everything they sent."""
        self._stop.set()
        if self in RUNNING:
            RUNNING.remove(self)
        if self._thread is not None:
            self._thread.join(timeout)
            assert not self._thread.is_alive(), "load driver did not stop"
        return self.ledger

    async def _main(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.clients, force_close=False)
        timeout = aiohttp.ClientTimeout(total=self.request_timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(self._client(session, c) for c in range(self.clients)))

    async def _client(self, session: aiohttp.ClientSession, client: int) -> None:
        n = 0
        while not self._stop.is_set() and n < self.max_requests:
            ids = [f"{self.prefix}-{client}-{n}-{r}" for r in range(self.rows_per_request)]
            wait = self.wait_for(client, n)
            method, path, body, headers = self.dialect.request(self.stream, ids, wait)
            headers = {**headers, "Authorization": f"Bearer {self.key}"}
            sent = time.monotonic()
            retry_after = None
            reply: int | str
            try:
                async with session.request(method, self.base_url + path, data=body, headers=headers) as resp:
                    await resp.read()
                    reply = resp.status
                    retry_after = resp.headers.get("Retry-After")
            except TimeoutError:
                reply = "timeout"
            except (aiohttp.ClientError, OSError):
                reply = "connection"
            took = time.monotonic() - sent
            self.ledger.add(Outcome(ids, wait, reply, sent, took, retry_after))
            n += 1
            if reply == "connection" or (isinstance(reply, int) and reply >= 500) or reply == 429:
                await asyncio.sleep(0.05)  # back off a little, as a real client would
            elif self.pause_s:
                await asyncio.sleep(self.pause_s)


@dataclass
class Figures:
    """What the issue asks to report for every scenario."""

    scenario: str
    dialect: str
    requests: int
    replies: dict[str, int]
    rows_sent: int
    rows_acknowledged: int
    rows_delivered: int
    acknowledged_missing: int
    delivered_unacknowledged_allowed: int  # reply was a timeout, no reply, 504, 507 or 500
    delivered_unacknowledged_violations: int  # reply promised "nothing written" (4xx, 503)
    duplicates: int  # records beyond the first of each id
    unknown_records: int  # records whose id no request carried
    notes: dict[str, Any] = field(default_factory=dict)

    def problems(self) -> list[str]:
        """Broken promises: acknowledged rows missing, refused rows written, stray records."""
        out = []
        if self.acknowledged_missing:
            out.append(f"{self.acknowledged_missing} acknowledged rows missing")
        if self.delivered_unacknowledged_violations:
            out.append(
                f"{self.delivered_unacknowledged_violations} rows written although the "
                "reply promised nothing written"
            )
        if self.unknown_records:
            out.append(f"{self.unknown_records} records that no request sent")
        return out


def account(
    scenario: str,
    ledgers: Iterable[Ledger],
    records: list[Record],
    dialect: Dialect,
    *,
    excused: Callable[[Outcome], bool] | None = None,
    **notes: Any,
) -> Figures:
    """Compare what was acknowledged with what the topic holds.

    `excused(outcome)` may mark acknowledged requests whose loss the scenario expects and measures
    (kill -9 without durable mode): they are counted in `notes["lost_excused"]`, not as missing.
    """
    outcomes = [o for ledger in ledgers for o in ledger.snapshot()]
    reply_of: dict[str, Outcome] = {i: o for o in outcomes for i in o.ids}
    seen = Counter(dialect.row_id(r) for r in records)
    acked = {i for o in outcomes if o.reply in ACKED for i in o.ids}
    missing = acked - seen.keys()
    lost_excused = {i for i in missing if excused is not None and excused(reply_of[i])}
    allowed = violations = unknown = 0
    for i in seen:
        o = reply_of.get(i)
        if o is None:
            unknown += 1
        elif o.reply in ACKED:
            continue
        elif promises_nothing_written(o.reply):
            violations += 1
        else:
            allowed += 1
    if excused is not None:
        notes["lost_excused"] = len(lost_excused)
    return Figures(
        scenario=scenario,
        dialect=dialect.name,
        requests=len(outcomes),
        replies=dict(sorted(Counter(str(o.reply) for o in outcomes).items())),
        rows_sent=len(reply_of),
        rows_acknowledged=len(acked),
        rows_delivered=len(seen),
        acknowledged_missing=len(missing - lost_excused),
        delivered_unacknowledged_allowed=allowed,
        delivered_unacknowledged_violations=violations,
        duplicates=sum(seen.values()) - len(seen),
        unknown_records=unknown,
        notes=notes,
    )


# ---- REPORT.md ----------------------------------------------------------------------------------
_DATA = re.compile(r"<!-- figures\n(.*?)\n-->", re.S)
_INTRO = """# Reliability report

Generated by the tests in `tests/reliability/` (each scenario rewrites its own entry when it runs);
the figures are from the last real run on the development machine (2 cores, shared), against a
real single-node Apache Kafka broker. Every row carries a unique id; after each scenario the whole
topic is read back and compared with the ledger of replies.

- **acknowledged**: rows whose request got 200/202/204. **missing**: acknowledged but not in the
  topic (must be 0; see *lost (excused)* for the measured kill -9 window without durable mode).
- **unacked, allowed**: in the topic although the reply was a timeout, no reply, 504 or 507 (these
  promise nothing either way). **violations**: in the topic although the reply was a 4xx or 503,
  which promise "nothing written" (must be 0).
- **duplicates**: records beyond the first of the same id (at-least-once re-sends).
"""


def _load() -> dict[str, Any]:
    if not REPORT.exists():
        return {}
    m = _DATA.search(REPORT.read_text())
    return json.loads(m.group(1)) if m else {}


def record(figures: Figures) -> None:
    """Store a scenario's figures in the REPORT (other scenarios' entries are kept)."""
    data = _load()
    entry = asdict(figures)
    entry["when"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    data[figures.scenario] = entry
    lines = [
        _INTRO,
        "| scenario | requests | replies | acknowledged | delivered | missing | "
        "lost (excused) | unacked, allowed | violations | duplicates |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in sorted(data):
        f = data[name]
        replies = ", ".join(f"{k}: {v}" for k, v in f["replies"].items())
        lines.append(
            f"| {name} | {f['requests']} | {replies} | {f['rows_acknowledged']} | "
            f"{f['rows_delivered']} | {f['acknowledged_missing']} | "
            f"{f['notes'].get('lost_excused', '-')} | "
            f"{f['delivered_unacknowledged_allowed']} | "
            f"{f['delivered_unacknowledged_violations']} | {f['duplicates']} |"
        )
    lines.append("\n## Scenario notes\n")
    for name in sorted(data):
        f = data[name]
        lines.append(f"### {name}\n")
        lines.append(f"Dialect `{f['dialect']}`, {f['rows_sent']} rows sent, run {f['when']}.\n")
        for k, v in f["notes"].items():
            lines.append(f"- {k.replace('_', ' ')}: {v}")
        lines.append("")
    lines.append("<!-- figures\n" + json.dumps(data, indent=1, sort_keys=True) + "\n-->\n")
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(lines))
