"""The pure-Python twin of the native record-batch encoder (gateway/sinks/_recordbatch.c): the same
functions, the same bytes; used when the native module is not built, or when forced (see
gateway/sinks/recordbatch.py)."""

from __future__ import annotations

import struct
from itertools import islice

from aiokafka.record.util import calc_crc32c

from gateway.sinks.base import Headers

HEADER_SIZE = 61
# everything after the CRC: attributes, last offset delta, first and max timestamp, producer id,
# producer epoch, base sequence, record count (the CRC covers these and the records)
_AFTER_CRC = struct.Struct(">hiqqqhii")
_BEFORE_CRC = struct.Struct(">qiib")  # base offset, length, partition leader epoch, magic
_CRC = struct.Struct(">I")
_NO_HEADERS = b"\x00"
_NONE = b"\x01"  # the varint of -1: a null key or value
_NO_HEADER_LIST: Headers = []
_ZEROS = b"\x00\x00"  # a record's attributes and timestamp delta (one timestamp per batch)


def _varint_of(n: int) -> bytes:
    u = (n << 1) ^ (n >> 63)
    out = bytearray()
    while u >= 0x80:
        out.append((u & 0x7F) | 0x80)
        u >>= 7
    out.append(u)
    return bytes(out)


_TABLE = [_varint_of(n) for n in range(2048)]  # lengths and offsets of most records: a lookup


def _varint(n: int) -> bytes:
    """Kafka's zigzag varint of `n` (≥ -1 here: lengths, offsets, and -1 for None)."""
    return _TABLE[n] if 0 <= n < 2048 else _varint_of(n)


def _header_block(headers: Headers) -> bytes:
    parts = [_varint(len(headers))]
    for name, value in headers:
        raw = name.encode("utf-8")
        parts += (_varint(len(raw)), raw)
        if value is None:
            parts.append(_varint(-1))
        else:
            parts += (_varint(len(value)), value)
    return b"".join(parts)


def encode(
    values: list[bytes],
    keys: list[bytes] | list[bytes | None] | None,
    headers: list[Headers] | None,
    order: list[int] | None,
    start: int,
    batch_size: int,
) -> tuple[bytearray, int]:
    """Records values[i] (key keys[i], headers headers[i]) for i in order[start:] (values[start:]
    when order is None) after a blank 61-byte batch header, as many as fit in `batch_size` bytes
    by aiokafka's rule (the first one always): (the buffer, how many records it holds)."""
    parts: list[bytes] = [bytes(HEADER_SIZE)]
    pos = HEADER_SIZE
    seen: object = None
    block = _NO_HEADERS
    count = 0
    table = _TABLE
    for i in islice(order, start, None) if order is not None else range(start, len(values)):
        value = values[i]
        if headers is not None and headers[i] is not seen:  # a flush's records share one list
            seen = headers[i]
            block = _header_block(headers[i])
        key = keys[i] if keys is not None else None
        key_part = _NONE if key is None else _varint(len(key)) + key
        offset = table[count] if count < 2048 else _varint_of(count)
        if value is None:
            value_len, value = _NONE, b""
        else:
            value_len = table[len(value)] if len(value) < 2048 else _varint_of(len(value))
        body = 2 + len(offset) + len(key_part) + len(value_len) + len(value) + len(block)
        length = table[body] if body < 2048 else _varint_of(body)
        size = len(length) + body
        if count and pos + size >= batch_size:
            break
        parts += (length, _ZEROS, offset, key_part, value_len, value, block)
        pos += size
        count += 1
    return bytearray(b"".join(parts)), count


def encode_lines(
    runs: list[bytes], headers: list[Headers | None] | None, run: int, offset: int, batch_size: int
) -> tuple[bytearray, int, int, int]:
    """Unkeyed records given as runs of newline-terminated lines (one run per request; its records
    share headers[run]), from byte `offset` of runs[run] on, as many as fit by the rule of
    `encode`: (the buffer, how many records it holds, the run and offset the next batch starts at;
    len(runs), 0 once every record is in)."""
    if run < 0 or offset < 0:
        raise ValueError("run and offset must not be negative")
    values: list[bytes] = []
    each: list[Headers] = []  # each record's headers: its run's list, shared
    firsts: list[tuple[int, int, int]] = []  # per run split: (run, offset, its first record)
    size = 0
    for k in range(run, len(runs)):
        if size >= batch_size:  # more than a batch holds: enough split
            break
        blob = runs[k]
        if type(blob) is not bytes:
            raise TypeError(f"a run of records must be bytes, not {type(blob).__name__}")
        if blob and blob[-1] != 0x0A:
            raise ValueError("a run of records must end with a newline")
        at = offset if k == run else 0
        if at > len(blob):
            raise ValueError("offset past the end of its run")
        lines = blob[at:].split(b"\n")
        lines.pop()
        firsts.append((k, at, len(values)))
        values += lines
        if headers is not None:
            each += [headers[k] or _NO_HEADER_LIST] * len(lines)
        size += len(blob) - at
    buffer, count = encode(values, None, each if headers is not None else None, None, 0, batch_size)
    k, at = run, offset
    for split_run, split_at, first in reversed(firsts):  # the run holding the next record
        if first <= count:
            k, at = split_run, split_at + sum(map(len, values[first:count])) + count - first
            break
    while k < len(runs) and at == len(runs[k]):  # past a run's last record: the next run
        k, at = k + 1, 0
    return buffer, count, k, at


def finish(
    buffer: bytearray,
    count: int,
    timestamp: int,
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
    attributes: int,
) -> None:
    """Fill in the batch header of `buffer` (from `encode`) and its CRC-32C, in place."""
    _BEFORE_CRC.pack_into(buffer, 0, 0, len(buffer) - 12, -1, 2)
    _AFTER_CRC.pack_into(
        buffer,
        21,
        attributes,
        max(count - 1, 0),
        timestamp,
        timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
        count,
    )
    _CRC.pack_into(buffer, 17, calc_crc32c(memoryview(buffer)[21:]))
