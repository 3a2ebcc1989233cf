"""The v3 body framer: whole objects as soon as their closing brace arrives, whatever the cuts."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dialects.restproxy_v3 import ObjectFramer
from gateway.errors import MalformedBody

TRICKY = [
    {"value": {"type": "JSON", "data": {"s": 'a "quoted" {brace} [bracket] \\ back\\'}}},
    {"value": {"type": "STRING", "data": "}}}{{{"}, "key": {"type": "JSON", "data": [1, [2, {"x": "]"}]]}},
    {"value": {"type": "JSON", "data": '\u00e9\u2603 \\" end'}},
]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
)


def frame(chunks: list[bytes]) -> tuple[list[bytes], MalformedBody | None]:
    framer = ObjectFramer()
    out = [o for c in chunks for o in framer.feed(c)]
    framer.finish()
    return out, framer.error


def cut(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts})
    return [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]


def test_objects_each_complete_as_its_brace_arrives() -> None:
    texts = [json.dumps(o).encode() for o in TRICKY]
    body = b"".join(texts)  # not separated at all, as a generator of json.dumps sends them
    framer = ObjectFramer()
    got: list[bytes] = []
    for i in range(len(body)):
        got += framer.feed(body[i : i + 1])  # one byte at a time: every escape cut in two
        assert len(got) == sum(1 for t in range(len(texts)) if len(b"".join(texts[: t + 1])) <= i + 1)
    assert got == texts and [json.loads(g) for g in got] == TRICKY


def test_malformed_start_and_open_end() -> None:
    assert frame([b'{"a":1}\n[1]'])[0] == [b'{"a":1}'] and frame([b'{"a":1}\n[1]'])[1] is not None
    assert frame([b'  {"a": "}'])[1] is not None
    assert frame([b" \n\t"]) == ([], None)


@settings(max_examples=50)
@given(
    objects=st.lists(st.dictionaries(st.text(), JSON_VALUES), max_size=5),
    seps=st.sampled_from(["", "\n", " \r\n "]),
    cuts=st.lists(st.integers(0, 10_000), max_size=6),
)
def test_any_cuts_frame_like_the_whole(objects: list[dict[str, object]], seps: str, cuts: list[int]) -> None:
    body = seps.join(json.dumps(o, ensure_ascii=False) for o in objects).encode()
    got, error = frame(cut(body, cuts))
    assert error is None and [json.loads(g) for g in got] == objects
