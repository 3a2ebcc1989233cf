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
_SMALL = [bytes([n << 1]) for n in range(64)]  # zigzag varints of 0..63: one byte each
_NO_HEADERS = b"\x00"


def _varint(n: int) -> bytes:
    """Kafka's zigzag varint of `n` (≥ -1 here: lengths, offsets, and -1 for None)."""
    if 0 <= n < 64:
        return _SMALL[n]
    u = (n << 1) ^ (n >> 63)
    out = bytearray()
    while u >= 0x80:
        out.append((u & 0x7F) | 0x80)
        u >>= 7
    out.append(u)
    return bytes(out)


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


def encode(values: list[bytes], keys: list[bytes] | list[bytes | None] | None,
           headers: list[Headers] | None,
           order: list[int] | None, start: int, batch_size: int) -> tuple[bytearray, int]:
    """Records values[i] (key keys[i], headers headers[i]) for i in order[start:] (values[start:]
    when order is None) after a blank 61-byte batch header, as many as fit in `batch_size` bytes
    by aiokafka's rule (the first one always): (the buffer, how many records it holds)."""
    out = bytearray(HEADER_SIZE)
    pos = HEADER_SIZE
    seen: object = None
    block = _NO_HEADERS
    count = 0
    for i in (islice(order, start, None) if order is not None else range(start, len(values))):
        value = values[i]
        if headers is not None and headers[i] is not seen:  # a flush's records share one list
            seen = headers[i]
            block = _header_block(headers[i])
        key = keys[i] if keys is not None else None
        # attributes and timestamp delta (one timestamp per batch): two zero bytes
        body = b"".join((b"\x00\x00", _varint(count),
                         _varint(-1) if key is None else _varint(len(key)) + key,
                         _varint(-1) if value is None else _varint(len(value)) + value, block))
        length = _varint(len(body))
        size = len(length) + len(body)
        if count and pos + size >= batch_size:
            break
        out += length
        out += body
        pos += size
        count += 1
    return out, count


def finish(buffer: bytearray, count: int, timestamp: int, producer_id: int, producer_epoch: int,
           base_sequence: int, attributes: int) -> None:
    """Fill in the batch header of `buffer` (from `encode`) and its CRC-32C, in place."""
    _BEFORE_CRC.pack_into(buffer, 0, 0, len(buffer) - 12, -1, 2)
    _AFTER_CRC.pack_into(buffer, 21, attributes, max(count - 1, 0), timestamp, timestamp,
                         producer_id, producer_epoch, base_sequence, count)
    _CRC.pack_into(buffer, 17, calc_crc32c(memoryview(buffer)[21:]))
