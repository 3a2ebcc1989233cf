"""What skipping the re-encode of NDJSON rows would save, and what proving it safe costs (issue 15).

Handing a validated row's own line to Kafka (instead of encoding the decoded row again) is only
right when the line already is a record value: one object per line, every column exactly once and
no other key, and each value in a form the gateway writes (e.g. no `2024-05-01 10:00:00` datetime,
no offset without its colon). msgspec checks columns and types while decoding, but not duplicate
keys or framing, so the rest must be proven from the bytes. `passes()` below is the cheapest sound
rule set found (each condition is needed; see RESULTS.md, "No re-encode when not needed"):

- the run decodes with a row type that has no defaults and forbids unknown fields;
- its lines are its objects: as many lines as rows, `}\\n{` between every two of them, no CR;
- it holds exactly rows x columns `":` pairs, and no `"` is followed by a space or a tab (so no
  key hides from that count): each row has each column exactly once;
- with datetime columns: no space-separated datetime, no offset without a colon, and no escape of
  ASCII 0x20-0x3F (which could hide either), found by substring search over the text with its
  digits turned into 0.

    python -m benchmarks.reencode_cost [--rounds 5]

prints CPU nanoseconds per row (best round, time.process_time) of each step, on S1's payload
(100-row NDJSON bodies of ~150-byte rows) and on the same rows as a client with other habits
writes them (keys in another order, `json.dumps` spacing).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from typing import Any

import msgspec

from benchmarks.payloads import COLUMNS, Payload, RowFactory, make_body
from gateway.catalog.model import Column, Stream
from gateway.ingest.schema import CompiledSchema

ZEROS = bytes.maketrans(b"123456789", b"000000000")


def exact_decoder(schema: CompiledSchema) -> msgspec.json.Decoder[Any]:
    """The schema's row type with every column required and unknown fields refused."""
    fields = [(f"f{i}", f.py) for i, f in enumerate(schema.fields)]
    row = msgspec.defstruct(
        "Exact",
        fields,
        kw_only=True,
        forbid_unknown_fields=True,
        rename={f"f{i}": c for i, c in enumerate(schema.columns)},
    )
    return msgspec.json.Decoder(row)


def structure_ok(data: bytes, n: int, columns: int) -> bool:
    """Framing and exactly-once keys (the rows decoded with `exact_decoder`)."""
    return (
        data.count(b"}\n{") == n - 1
        and data[:1] == b"{"
        and data.rstrip(b"\n")[-1:] == b"}"
        and b"\r" not in data
        and data.count(b'":') == n * columns
        and b'" ' not in data
        and b'"\t' not in data
    )


def datetimes_ok(data: bytes) -> bool:
    """No datetime form msgspec accepts but RFC 3339 does not (nor an escape that could hide one)."""
    zeros = data.translate(ZEROS)
    return not (
        b"00-00 00:00:00" in zeros
        or b'0+0000"' in zeros
        or b'0-0000"' in zeros
        or b"\\u002" in data
        or b"\\u003" in data
    )


def passes(data: bytes, exact: msgspec.json.Decoder[Any], columns: int) -> list[bytes] | None:
    """The run's lines when they can go to Kafka as sent, else None."""
    try:
        rows = exact.decode_lines(data)
    except msgspec.ValidationError:
        return None
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    if len(lines) != len(rows) or not structure_ok(data, len(rows), columns):
        return None
    return lines if datetimes_ok(data) else None


def client_style(body: bytes, rng: random.Random) -> bytes:
    """The rows of `body` with keys in another order and `json.dumps` spacing."""
    out = []
    for line in body.splitlines():
        items = list(json.loads(line).items())
        rng.shuffle(items)
        out.append(json.dumps(dict(items)))
    return ("\n".join(out) + "\n").encode()


def per_row(fn: Callable[[bytes], object], bodies: list[bytes], rows: int, rounds: int) -> float:
    """CPU nanoseconds per row of `fn` over every body, best of `rounds`."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        for _ in range(20):
            for b in bodies:
                fn(b)
        best = min(best, (time.process_time() - t0) / (20 * len(bodies) * rows) * 1e9)
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    factory = RowFactory("20261201T000000Z-abcdef")
    payload = Payload("ndjson", 100)
    plain = [make_body(payload, [factory.row() for _ in range(100)]).data for _ in range(40)]
    rng = random.Random(1)
    styled = [client_style(b, rng) for b in plain]
    stream = Stream(name="bench", topic="t", columns=[Column(c["name"], c["type"]) for c in COLUMNS])
    schema = CompiledSchema(stream)
    exact = exact_decoder(schema)
    ncols = len(schema.columns)
    decoded = {id(b): schema.ndjson_decoder.decode_lines(b) for b in plain + styled}
    print("| step (ns per row, best round) | S1 payload | keys reordered, spaced |")
    print("| --- | --- | --- |")
    for name, fn in [
        ("typed decode (decode_ndjson)", lambda b: schema.decode_ndjson(b, 0)),
        (
            "**re-encode: what pass-through would save** (schema.encode: encode_lines + split)",
            lambda b: schema.encode(decoded[id(b)]),
        ),
        ("split of the input into lines (pass-through needs it instead)", lambda b: b.split(b"\n")),
        ("exact decode (no defaults, unknown fields refused)", lambda b: exact.decode_lines(b)),
        ("check: framing and exactly-once keys", lambda b: structure_ok(b, 100, ncols)),
        ('  `":` count alone', lambda b: b.count(b'":')),
        ('  `" ` search alone', lambda b: b'" ' in b),
        ("check: datetime forms", datetimes_ok),
        ("**pass-through: exact decode + split + checks**", lambda b: passes(b, exact, ncols)),
    ]:
        a = per_row(fn, plain, 100, args.rounds)
        b = per_row(fn, styled, 100, args.rounds)
        print(f"| {name} | {a:,.0f} | {b:,.0f} |")
    hits = sum(passes(b, exact, ncols) is not None for b in plain + styled)
    print(f"\n{hits} of {len(plain) + len(styled)} bodies pass the checks.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
