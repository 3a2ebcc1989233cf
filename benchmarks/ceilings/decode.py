"""Ceiling (2): read the whole body, decode it with untyped msgspec.json and answer 202.

NDJSON (`application/x-ndjson`) goes through `decode_lines`, anything else through `decode`;
`Content-Encoding: gzip` is inflated first. This is the stack's ceiling for rows/s: HTTP plus JSON
decoding, with no validation, no encoding for Kafka and no producing.
"""

from __future__ import annotations

import sys
import zlib

import msgspec
from aiohttp import web

from benchmarks.ceilings.serve import main

_decoder = msgspec.json.Decoder()
_ACCEPTED = b'{"accepted":true}'


async def decode(request: web.Request) -> web.Response:
    body = await request.read()
    if request.headers.get("Content-Encoding", "") == "gzip":
        body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
    if request.content_type == "application/x-ndjson":
        _decoder.decode_lines(body)
    else:
        _decoder.decode(body)
    return web.Response(body=_ACCEPTED, status=202, content_type="application/json")


def app() -> web.Application:
    application = web.Application(client_max_size=256 * 1024 * 1024)
    application.router.add_route("POST", "/{tail:.*}", decode)
    return application


if __name__ == "__main__":
    raise SystemExit(main(app(), sys.argv[1:]))
