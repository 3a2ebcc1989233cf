"""glibc's malloc settings for a process that produces to Kafka.

aiokafka encodes each Produce request by copying every record batch several times (each length
prefix and each nesting level of the request joins a new bytes object, then the connection adds
its header and size prefix). Those buffers are 100 KiB to a few MiB: glibc serves the first ones
with mmap and, as soon as they are freed, gives the top of its heap back to the kernel (trim), so
the next request faults every page in again. Measured (benchmarks/produce_cost.py, 180 KB batch):
0.77 ms of CPU per Produce request encoded, 158 page faults, three quarters of it system time;
56 µs with the settings below. They fix the mmap threshold above the largest batch and keep up to
`TRIM_BYTES` of freed heap for the next request; memory stays bounded by the queue and unsettled
limits as before, it is only returned to the kernel later.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)
M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_BYTES = 8 << 20  # larger blocks (huge Produce requests) still get their own mapping
TRIM_BYTES = 64 << 20
_done = False


def keep_request_buffers() -> bool:
    """Apply the settings once per process; False where the C library is not glibc."""
    global _done
    if _done:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, macOS: no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_BYTES))
    if not _done:
        log.warning("could not set glibc's malloc thresholds; Produce requests cost more CPU")
    return _done
