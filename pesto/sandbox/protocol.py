"""Framing between the server and a job's supervisor: 4-byte length + JSON (msgspec)."""

from __future__ import annotations

import socket
import struct
from typing import Any

import msgspec

MAX_MESSAGE = 64 * 1024 * 1024
_HEADER = struct.Struct("!I")


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def encode(msg: Any) -> bytes:
    body = _encode(msg)
    return _HEADER.pack(len(body)) + body


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def recv_blocking(sock: socket.socket) -> Any | None:
    """The next message, or None at EOF (the server went away or closed)."""
    head = _recv_exact(sock, _HEADER.size)
    if head is None:
        return None
    (size,) = _HEADER.unpack(head)
    if size > MAX_MESSAGE:
        raise ValueError("message too large")
    body = _recv_exact(sock, size)
    if body is None:
        return None
    return _decode(body)


def send_blocking(sock: socket.socket, msg: Any) -> None:
    sock.sendall(encode(msg))


async def recv_async(reader) -> Any | None:
    import asyncio
    try:
        head = await reader.readexactly(_HEADER.size)
        (size,) = _HEADER.unpack(head)
        body = await reader.readexactly(size)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return _decode(body)
