"""Ceiling (5): the whole job without validation. Read the body, decode it with untyped msgspec (as
ceiling 2), and produce its lines as they are through a bare aiokafka batch-API producer (acks=all,
idempotent; batches built by benchmarks.ceilings.batch with the BUILDER named, aiokafka's by
default), coalesced across requests as the
gateway's queue does: a flush after the same linger (5 ms), batches up to 1 MiB, each batch on the
next partition. `?wait=true` answers once Kafka has acknowledged the request's rows, else at once.

`python -m benchmarks.ceilings.produce PORT BOOTSTRAP TOPIC PARTITIONS [aiokafka|native]`
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import zlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from aiohttp import web
from aiokafka import AIOKafkaProducer

from benchmarks.ceilings.batch import BUILDERS, producer, send_values
from benchmarks.ceilings.serve import main

LINGER_S = 0.005  # the gateway's default --linger-ms
MAX_PENDING_BYTES = 64 * 1024 * 1024  # requests wait for room beyond this (bounded memory)
_decoder = msgspec.json.Decoder()
_ACCEPTED = b'{"accepted":true}'


class Flusher:
    """Lines waiting to be produced, and the futures of the `wait=true` requests among them."""

    def __init__(
        self, kafka: AIOKafkaProducer, topic: str, partitions: int, builder: str = "aiokafka"
    ) -> None:
        self.kafka = kafka
        self.builder = builder
        self.topic = topic
        self.partitions = partitions
        self.partition = 0
        self.lines: list[bytes] = []
        self.nbytes = 0
        self.waiters: list[asyncio.Future[None]] = []
        self.settling: set[asyncio.Task[None]] = set()  # tasks answering wait=true requests
        self.wake = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()

    async def add(self, lines: list[bytes], nbytes: int, wait: bool) -> None:
        """Queue a request's lines; with `wait`, return once Kafka has acknowledged them."""
        while self.nbytes > MAX_PENDING_BYTES:
            self.room.clear()
            await self.room.wait()
        self.lines += lines
        self.nbytes += nbytes
        self.wake.set()
        if wait:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.waiters.append(done)
            await done

    async def run(self) -> None:
        """Flush whatever is queued, a linger after the first line arrived, until cancelled."""
        while True:
            await self.wake.wait()
            await asyncio.sleep(LINGER_S)
            self.wake.clear()
            lines, waiters = self.lines, self.waiters
            self.lines, self.waiters, self.nbytes = [], [], 0
            self.room.set()
            futures: list[asyncio.Future[Any]] = []
            start = 0
            while start < len(lines):
                future, start = await send_values(
                    self.kafka,
                    self.topic,
                    self.partition % self.partitions,
                    lines,
                    start,
                    builder=self.builder,
                )
                self.partition += 1
                futures.append(future)
            if waiters:
                task = asyncio.create_task(_settle(futures, waiters))
                self.settling.add(task)
                task.add_done_callback(self.settling.discard)


async def _settle(futures: list[asyncio.Future[Any]], waiters: list[asyncio.Future[None]]) -> None:
    try:
        await asyncio.gather(*futures)
    except Exception as exc:  # the requests fail with Kafka's error (500)
        for w in waiters:
            if not w.done():
                w.set_exception(exc)
        return
    for w in waiters:
        if not w.done():  # (its request may have been cancelled meanwhile)
            w.set_result(None)


FLUSHER = web.AppKey("flusher", Flusher)


async def ingest(request: web.Request) -> web.Response:
    body = await request.read()
    if request.headers.get("Content-Encoding", "") == "gzip":
        body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
    _decoder.decode_lines(body)  # untyped: JSON syntax only, the values are not used
    lines = body.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    await request.app[FLUSHER].add(lines, len(body), request.query.get("wait") == "true")
    return web.Response(body=_ACCEPTED, status=202, content_type="application/json")


def app(bootstrap: str, topic: str, partitions: int, builder: str = "aiokafka") -> web.Application:
    application = web.Application(client_max_size=256 * 1024 * 1024)
    application.router.add_route("POST", "/{tail:.*}", ingest)

    async def producing(app: web.Application) -> AsyncIterator[None]:
        kafka = producer(bootstrap)
        await kafka.start()
        app[FLUSHER] = flusher = Flusher(kafka, topic, partitions, builder)
        task = asyncio.create_task(flusher.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await kafka.stop()  # sends what is left

    application.cleanup_ctx.append(producing)
    return application


if __name__ == "__main__":
    if (
        len(sys.argv) not in (5, 6)
        or not sys.argv[4].isdigit()
        or (sys.argv[5:] and sys.argv[5] not in BUILDERS)
    ):
        print(
            "usage: python -m benchmarks.ceilings.produce PORT BOOTSTRAP TOPIC PARTITIONS "
            f"[{'|'.join(BUILDERS)}]",
            file=sys.stderr,
        )
        raise SystemExit(2)
    raise SystemExit(main(app(sys.argv[2], sys.argv[3], int(sys.argv[4]), *sys.argv[5:]), sys.argv[1:2]))
