"""uvicorn's httptools protocol, with one send() per response instead of two.

uvicorn writes a response's head when the app sends `http.response.start`
and its body at `http.response.body`: two send() calls, two TCP segments
(uvloop sets TCP_NODELAY) and two wake-ups of the client, for every answer.
On loopback each send() runs the receiver's TCP path too, and that pair
was the largest single cost of the server's event loop thread per request.

`HttpToolsProtocol` here gives uvicorn a transport that gathers what is
written during one event-loop step and sends it with one write at the end
of the step (a Litestar response sends its head and body in one step).
Everything else is uvicorn's own protocol, unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _UvicornHttpTools


class CoalescingTransport:
    """A transport whose writes of one loop step leave in one write of the real one."""

    __slots__ = ("_transport", "_loop", "_pending")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = [data]
            self._loop.call_soon(self._flush)
        else:
            self._pending.append(data)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending:
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def get_write_buffer_size(self) -> int:
        pending = sum(len(data) for data in self._pending) if self._pending else 0
        return pending + self._transport.get_write_buffer_size()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._flush()                  # what was written goes out before the FIN
        self._transport.close()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:     # everything else is the real transport's
        return getattr(self._transport, name)


class HttpToolsProtocol(_UvicornHttpTools):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(
            CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
