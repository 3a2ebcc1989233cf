"""Which record-batch encoder the Kafka sink uses: the native one (gateway/sinks/_recordbatch.c,
built by `pip install` when a C compiler is there) or its pure-Python twin, which writes the same
bytes. The native one is chosen when it imports, unless GATEWAY_PURE_PYTHON_BATCHES=1."""

from __future__ import annotations

import importlib
import logging
import os
from typing import Protocol, cast

from gateway.sinks import recordbatch_py
from gateway.sinks.base import Headers

log = logging.getLogger(__name__)
FORCE_PURE_ENV = "GATEWAY_PURE_PYTHON_BATCHES"
HEADER_SIZE = recordbatch_py.HEADER_SIZE  # a batch's header, before its first record
ABI = 2  # the native module's ABI constant this code expects (a stale build is not used)


Keys = list[bytes] | list[bytes | None]  # a key per record (None: no key)


class Encoder(Protocol):
    """What both encoders offer (see recordbatch_py for the contract)."""

    def encode(
        self,
        values: list[bytes],
        keys: Keys | None,
        headers: list[Headers] | None,
        order: list[int] | None,
        start: int,
        batch_size: int,
        /,
    ) -> tuple[bytearray, int]: ...

    def encode_lines(
        self,
        runs: list[bytes],
        headers: list[Headers | None] | None,
        run: int,
        offset: int,
        batch_size: int,
        /,
    ) -> tuple[bytearray, int, int, int]: ...

    def finish(
        self,
        buffer: bytearray,
        count: int,
        timestamp: int,
        producer_id: int,
        producer_epoch: int,
        base_sequence: int,
        attributes: int,
        /,
    ) -> None: ...


def _native() -> tuple[Encoder | None, str]:
    try:
        native = importlib.import_module("gateway.sinks._recordbatch")
    except ImportError as exc:
        return None, f"the native module is not built ({exc})"
    if getattr(native, "ABI", None) != ABI:
        return None, "the native module is stale (rebuild it: deploy/dev/setup)"
    return cast(Encoder, native), ""


NATIVE, _why_not = _native()  # None when missing; tests compare it with the pure-Python one
PURE: Encoder = recordbatch_py
ENCODER: Encoder
if os.environ.get(FORCE_PURE_ENV, "").strip() not in ("", "0"):
    ENCODER, CHOICE = PURE, f"pure-Python ({FORCE_PURE_ENV} is set)"
elif NATIVE is None:
    ENCODER, CHOICE = PURE, f"pure-Python ({_why_not})"
else:
    ENCODER = NATIVE
    CHOICE = "native (CRC-32C in %s)" % ("hardware" if getattr(NATIVE, "CRC_HARDWARE", 0) else "software")
_told = False


def announce() -> None:
    """Log once per process which encoder Kafka record batches are built with."""
    global _told
    if not _told:
        _told = True
        log.info("Kafka record batches are encoded by the %s encoder", CHOICE)
