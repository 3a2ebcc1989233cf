"""benchmarks/profile_summary.py: samples go to the stage of their innermost known frame."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.profile_summary import stage_of, summarise


def test_innermost_known_frame_decides() -> None:
    outer = ["main (/w/gateway/cli.py:1)", "observe (/w/gateway/middleware.py:66)"]
    assert stage_of(outer) == "gateway handlers, middleware, auth"
    assert (
        stage_of([*outer, "CompiledSchema.decode_ndjson (/w/gateway/ingest/schema.py:153)"])
        == "typed decode + validation (msgspec)"
    )
    assert (
        stage_of(
            [
                *outer,
                "json_reply (/w/gateway/dialects/common.py:23)",
                "StreamWriter._writelines (aiohttp/http_writer.py:116)",
            ]
        )
        == "HTTP (aiohttp)"
    )
    assert stage_of(["Runner.run (asyncio/runners.py:118)"]) == "event loop, other"


def test_summary_shares(tmp_path: Path) -> None:
    frames = [
        {"name": "main", "file": "/w/gateway/cli.py", "line": 1},
        {"name": "CompiledSchema.encode", "file": "/w/gateway/ingest/schema.py", "line": 320},
        {
            "name": "Sender._send_produce_req",
            "file": "x/site-packages/aiokafka/producer/sender.py",
            "line": 288,
        },
    ]
    doc = {"shared": {"frames": frames}, "profiles": [{"samples": [[0, 1], [0, 1], [0, 1], [0, 2]]}]}
    path = tmp_path / "p.speedscope.json"
    path.write_text(json.dumps(doc))
    text = summarise(path)
    assert "| re-encode for Kafka (msgspec) | 75% |" in text
    assert "| Kafka client (aiokafka) | 25% |" in text
