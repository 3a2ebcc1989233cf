"""The garbage collector's settings for a gateway process.

Decoded rows, futures of waiting requests and aiohttp's per-request objects make a steady stream
of container allocations; with Python's default threshold (700) the collector runs every few
hundred microseconds and its older generations keep re-walking every long-lived object of the
process. Measured with `benchmarks/run --scenario S2` (wait=true, three runs each way): 9.8 ->
7.1 gateway CPU-s per million rows, p99 122 -> 66 ms.
"""

from __future__ import annotations

import gc


def tune_gc(gen0_threshold: int) -> None:
    """Move everything allocated so far (modules, app, settings) out of the collector's sight and
    collect the young generation only every `gen0_threshold` allocations (0: Python's defaults)."""
    if gen0_threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(gen0_threshold, 50, 1000)
