"""The garbage collector's settings for a gateway process.

Decoded rows, futures of waiting requests and aiohttp's per-request objects make a steady stream
of container allocations; with Python's default threshold (700) the collector runs every few
hundred microseconds and its older generations keep re-walking every long-lived object of the
process. Measured with `benchmarks/run --scenario S2` (wait=true, three runs each way): 9.8 ->
7.1 gateway CPU-s per million rows, p99 122 -> 66 ms.

What the delay costs in memory is what requests leave for the collector: objects in reference
cycles, freed only by a pass. Measured in one process (aiohttp's test client, 100-row NDJSON
bodies, 200 requests of each kind with the collector off, then `gc.collect()`), per request:

| request | net young allocations | unreachable objects (before issue 20 item 13) |
|---|---|---|
| valid, 202 | 23 | 0 (0) |
| one invalid row, 400 | 22 | 0 (61, each pinning its body) |
| `?on_error=quarantine` / Tinybird, 202 | 26-28 | 0 (61-66, each pinning its body) |
| 401 / 404 | 19-22 | 0 (0) |

The worst case was a refused body pinned by its error's traceback: at 50,000 young allocations
between passes and ~86 per such request, ~580 bodies (1.2 GB of 2 MB bodies) waited for a pass.
With no error kept past its handler (gateway.errors.detach; tests/security/test_body_release.py)
no request leaves a cycle, so the threshold bounds only rare cycles of other origins: 50,000
stays, for the CPU it saves.
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
