"""The differential corpus: every request recorded from Karapace 6.2.0 (tests/restproxy_corpus/)
replayed against the gateway over real HTTP into the real broker, compared on status, media type,
error codes and reply shape. Every difference must be listed, with its reason, in
tests/restproxy_corpus/differences.json, and every listed difference must still occur."""

from __future__ import annotations

import base64
import json
from typing import Any

from tests.integration.harness import ADMIN_KEY, Gateway
from tests.restproxy_corpus.corpus import (
    BINARY_TOPIC,
    CASES,
    DIFFERENCES,
    JSON_TOPIC,
    RECORDING,
    Case,
    cluster_id,
    compare,
    send,
    summary,
)

COLUMNS = [{"name": "id", "type": "string"}, {"name": "n", "type": "int32"}]
TEXT = [{"name": "message", "type": "string"}]
KINDS = ("intended", "not_yet_aligned")
BASIC = {"Authorization": "Basic " + base64.b64encode(f"client:{ADMIN_KEY}".encode()).decode()}


def replay(gateway: Gateway, case: Case, cluster: str) -> dict[str, Any]:
    return summary(case, *send(gateway.url, case, cluster, BASIC if case.auth else None))


def listed() -> dict[str, tuple[str, list[str], str]]:
    """case name → (kind, aspects, reason), checked for form: one kind per case, a reason each."""
    doc = json.loads(DIFFERENCES.read_text())
    assert set(doc) == set(KINDS), sorted(doc)
    out: dict[str, tuple[str, list[str], str]] = {}
    for kind in KINDS:
        for name, entry in doc[kind].items():
            assert name not in out, f"{name} is listed twice"
            assert entry["reason"].strip(), f"{name}: no reason"
            out[name] = (kind, sorted(entry["aspects"]), entry["reason"])
    return out


def test_gateway_answers_like_karapace_except_listed(gateway: Gateway) -> None:
    recorded = json.loads(RECORDING.read_text())["replies"]
    assert sorted(recorded) == sorted(c.name for c in CASES), "re-run tests/restproxy_corpus/record"
    expected = listed()
    assert set(expected) <= set(recorded), sorted(set(expected) - set(recorded))
    gateway.create_stream(JSON_TOPIC, COLUMNS)
    gateway.create_stream(BINARY_TOPIC, TEXT)
    cluster = cluster_id(gateway.url, BASIC)

    unlisted, vanished, changed = [], [], []
    for case in CASES:
        lines = compare(recorded[case.name], replay(gateway, case, cluster))
        aspects = sorted(line.split(":", 1)[0] for line in lines)
        kind, want, reason = expected.get(case.name, ("", [], ""))
        if aspects == want:
            continue
        head = f"{case.name} ({case.method} {case.path})"
        if not want:
            unlisted.append("\n    ".join([head, *lines]))
        elif not aspects:
            vanished.append(f"{head}: listed as {kind} ({want}) but now answers as Karapace does: {reason}")
        else:
            changed.append("\n    ".join([f"{head}: listed {kind} {want}, now differs in {aspects}", *lines]))
    report = []
    if unlisted:
        report.append("differences not in differences.json:\n  " + "\n  ".join(unlisted))
    if changed:
        report.append("listed differences that changed:\n  " + "\n  ".join(changed))
    if vanished:
        report.append("listed differences that no longer occur (remove them):\n  " + "\n  ".join(vanished))
    assert not report, "\n".join(report)
