"""Raw HTTP/1.1 over sockets, for requests no well-behaved client library would send (lying
Content-Length, bodies that never end, headers sent byte by byte)."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class RawReply:
    """A parsed reply, or status 0 when the server closed the connection without one."""

    status: int
    headers: dict[str, str]
    body: bytes
    elapsed: float

    def json(self) -> Any:
        return json.loads(self.body)


def connect(port: int, timeout: float = 30.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_reply(sock: socket.socket, started: float | None = None) -> RawReply:
    """Read one reply (Content-Length framed); status 0 if the connection closed first."""
    started = time.monotonic() if started is None else started
    buf = b""
    while b"\r\n\r\n" not in buf:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            chunk = b""
        if not chunk:
            return RawReply(0, {}, buf, time.monotonic() - started)
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return RawReply(status, headers, body[:length], time.monotonic() - started)


def exchange(port: int, data: bytes, *, timeout: float = 30.0) -> RawReply:
    """Send `data` as is and read one reply."""
    with connect(port, timeout) as s:
        started = time.monotonic()
        s.sendall(data)
        return read_reply(s, started)


def request_bytes(
    method: str, path: str, headers: dict[str, str], body: bytes = b"", *, content_length: int | None = None
) -> bytes:
    """An HTTP/1.1 request; `content_length` may lie about the body."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if "Transfer-Encoding" not in headers:
        lines.append(f"Content-Length: {len(body) if content_length is None else content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True once the server has closed the connection (reads EOF) within `timeout`."""
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
