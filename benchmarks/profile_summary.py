"""Summarise a py-spy speedscope profile saved by `benchmarks/run --profile speedscope`: the share
of samples in each stage of the gateway's data flow, and the functions with the most own time.

    python -m benchmarks.profile_summary benchmarks/results/<run>-S1.speedscope.json
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

# A sample belongs to the stage of its innermost frame that matches a marker (checked in order).
STAGES = [
    ("typed decode + validation (msgspec)", ("CompiledSchema.decode", "gateway/ingest/formats.py")),
    ("re-encode for Kafka (msgspec)", ("CompiledSchema.encode",)),
    ("Kafka client (aiokafka)", ("aiokafka/",)),
    ("record batches (KafkaSink.send)", ("gateway/sinks/kafka.py",)),
    ("queues and flushing", ("gateway/queues.py",)),
    ("body reading", ("gateway/ingest/body.py",)),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("HTTP (aiohttp)", ("aiohttp/",)),
    ("gateway handlers, middleware, auth", ("/gateway/",)),
]


def stage_of(names: list[str]) -> str:
    """The stage of a sample, from its frames (outermost first)."""
    for name in reversed(names):
        for stage, marks in STAGES:
            if any(m in name for m in marks):
                return stage
    return "event loop, other"


def summarise(path: Path) -> str:
    doc = json.loads(path.read_text())
    frames = doc["shared"]["frames"]
    labels = [
        f"{f['name']} ({f.get('file', '').split('site-packages/')[-1]}:{f.get('line', '')})" for f in frames
    ]
    stages: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for profile in doc["profiles"]:
        for stack in profile["samples"]:
            total += 1
            names = [labels[i] for i in stack]
            own[names[-1]] += 1
            stages[stage_of(names)] += 1
    lines = [f"{path.name}: {total} samples", "", "| stage | share |", "| --- | --- |"]
    lines += [f"| {s} | {100 * c / total:.0f}% |" for s, c in stages.most_common()]
    lines += ["", "| function (own time) | share |", "| --- | --- |"]
    lines += [f"| `{n}` | {100 * c / total:.1f}% |" for n, c in own.most_common(8)]
    return "\n".join(lines)


def main() -> int:
    for arg in sys.argv[1:]:
        print(summarise(Path(arg)))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
