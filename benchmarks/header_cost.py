"""What the `schema-version` record header costs in the produce path: nanoseconds per record that
aiokafka's C batch builder (the one the Kafka sink fills) spends appending a ~150-byte row with no
header and with the one header every record now carries.

    python -m benchmarks.header_cost [--rounds 5] [--batches 20]

Prints the best round of each (the least disturbed by other load on the machine).
"""

from __future__ import annotations

import argparse
import time

from aiokafka.record.default_records import DefaultRecordBatchBuilder

VALUE = b'{"key1":"' + b"x" * 140 + b'","n":1}'
HEADERS: dict[str, list[tuple[str, bytes]]] = {"none": [], "schema-version": [("schema-version", b"1")]}


def ns_per_record(headers: list[tuple[str, bytes]], rounds: int, batches: int) -> float:
    """The best round's nanoseconds per appended record, 1 MiB batches filled to the brim."""
    best = float("inf")
    for _ in range(rounds):
        started, records = time.perf_counter(), 0
        for _ in range(batches):
            batch = DefaultRecordBatchBuilder(
                magic=2,
                compression_type=0,
                is_transactional=0,
                producer_id=-1,
                producer_epoch=-1,
                base_sequence=-1,
                batch_size=1 << 20,
            )
            offset = 0
            while batch.append(offset, timestamp=None, key=None, value=VALUE, headers=headers) is not None:
                offset += 1
            batch.build()
            records += offset
        best = min(best, (time.perf_counter() - started) / records)
    return best * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    for name, headers in HEADERS.items():
        print(f"{name:>15}: {ns_per_record(headers, args.rounds, args.batches):7.0f} ns/record")


if __name__ == "__main__":
    main()
