"""How long a new schema version takes to reach another replica (issue 14: "every replica
validates with the new version within 2 s"): two gateway processes on one broker; each round adds
a nullable column through replica A and times until replica B reports the new version.

    python -m benchmarks.schema_propagation --kafka-bootstrap 127.0.0.1:PORT [--rounds N]

The integration test tests/integration/test_schema_versions.py checks the same switch under load
for lost, duplicated and mixed rows; this script only measures the time, without load.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.gateways import Gateways
from benchmarks.payloads import COLUMNS
from benchmarks.procs import Pinning


async def _version(gw: Gateways, server_index: int, name: str) -> int:
    """The schema version replica `server_index` reports (0 while it does not know the stream)."""
    try:
        body = await gw._call(gw.servers[server_index], "GET", f"/api/v1beta2/streams/{name}")
    except RuntimeError:  # 404 until the stream reaches this replica
        return 0
    version: int = body["schema_version"]
    return version


async def _until_version(gw: Gateways, server_index: int, name: str, want: int) -> None:
    # Another process's HTTP API is polled: there is no event to await.
    while await _version(gw, server_index, name) < want:  # noqa: ASYNC110
        await asyncio.sleep(0.005)


async def measure(bootstrap: str, rounds: int) -> list[float]:
    """Seconds from sending each PATCH to replica A until replica B reports its version."""
    with tempfile.TemporaryDirectory(prefix="schema-propagation-") as work:
        gw = Gateways(
            bootstrap, Path(work), secrets.token_urlsafe(24), Pinning(None, None), [], "propagation"
        )
        await gw.start(2)
        name = "propagation_" + uuid.uuid4().hex[:8]
        took: list[float] = []
        try:
            created = await gw._call(
                gw.servers[0], "POST", "/api/v1beta2/streams", {"name": name, "columns": COLUMNS}
            )
            await _until_version(gw, 1, name, created.get("schema_version", 1))
            columns: list[dict[str, Any]] = list(COLUMNS)
            for i in range(rounds):
                columns = [*columns, {"name": f"extra_{i}", "type": "nullable(string)"}]
                sent = time.monotonic()
                reply = await gw._call(
                    gw.servers[0], "PATCH", f"/api/v1beta2/streams/{name}", {"columns": columns}
                )
                await _until_version(gw, 1, name, reply["schema_version"])
                took.append(time.monotonic() - sent)
            await gw._call(gw.servers[0], "DELETE", f"/api/v1beta2/streams/{name}")
        finally:
            await gw.stop()
        return took


def main() -> int:
    """Print each round's propagation time, the median and the maximum."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kafka-bootstrap", required=True)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    took = asyncio.run(measure(args.kafka_bootstrap, args.rounds))
    print("rounds (ms):", " ".join(f"{t * 1000:.0f}" for t in took))
    print(f"median {statistics.median(took) * 1000:.0f} ms, max {max(took) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
