"""A fault-injecting reverse proxy in front of the Stripe emulator.

localstripe ignores ``Idempotency-Key``, so the proxy adds Stripe's semantics (replay, parameter
mismatch → 400, in flight → 409, 5xx not stored) and can inject the failures a payment flow must
survive: an HTTP 500, a timeout after Stripe already acted, a dropped connection.

It is a raw asyncio server speaking HTTP/1.1 through h11 (a dependency of httpx) rather than
uvicorn, because an ASGI app cannot drop a connection without answering: uvicorn turns that
into a 500. It runs on its own event loop in a daemon thread so sync session fixtures and the
tests' own loops can both use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypeVar
from urllib.parse import parse_qsl

import h11
import httpx

# "slow" (not a Stripe failure) delays forwarding by ``slow_seconds`` so a test can reliably
# have a request in flight, e.g. to get the 409 for a concurrent request with the same key.
FaultMode = Literal["http_500", "timeout_after_forward", "refuse", "slow"]
_MODES: frozenset[str] = frozenset({"http_500", "timeout_after_forward", "refuse", "slow"})

# Hop-by-hop or recomputed headers that must not be copied onto the upstream request.
_SKIP_REQUEST_HEADERS = frozenset(
    {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "accept-encoding"}
)

_T = TypeVar("_T")


class RequestRecord(NamedTuple):
    method: str
    path: str
    idempotency_key: str | None


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    replayed: bool = False


@dataclass
class _Fault:
    mode: FaultMode
    path_contains: str
    method: str
    remaining: int


@dataclass
class _Entry:
    fingerprint: object
    response: _Response | None = None  # None while the first request is being forwarded


def _stripe_error(status: int, **error: str) -> _Response:
    return _Response(status, json.dumps({"error": error}).encode())


def _fingerprint(method: str, path: str, content_type: str, body: bytes) -> object:
    # Compare parsed, sorted form params: the same request built from a dict in another order
    # must count as "the same parameters", as it does for Stripe.
    if content_type.startswith("application/x-www-form-urlencoded"):
        params = sorted(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        return (method, path, tuple(params))
    return (method, path, body)


class FaultProxy:
    def __init__(
        self, upstream: str, *, hang_seconds: float = 30.0, slow_seconds: float = 1.0
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.hang_seconds = hang_seconds
        self.slow_seconds = slow_seconds
        self.port = 0
        self.base_url = ""
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._requests: list[RequestRecord] = []
        self._store: dict[tuple[str, str], _Entry] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._client: httpx.AsyncClient | None = None
        self._conn_tasks: set[asyncio.Task[None]] = set()

    # -- control from the test thread ----------------------------------------------------------

    def start(self, port: int = 0) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run_loop, name="stripe-fault-proxy", daemon=True
        )
        self._thread.start()
        self._call(self._astart(port))
        self.base_url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._call(self._astop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop = None
        self._thread = None

    def inject(
        self, mode: FaultMode, *, path_contains: str = "", method: str = "POST", count: int = 1
    ) -> None:
        """Make the next ``count`` matching requests fail with ``mode``."""
        if mode not in _MODES:
            raise ValueError(f"unknown fault mode {mode!r}")
        with self._lock:
            self._faults.append(_Fault(mode, path_contains, method.upper(), count))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def requests(self) -> list[RequestRecord]:
        """Snapshot of every request received, faulted ones included."""
        with self._lock:
            return list(self._requests)

    def count(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if r.method == method and r.path == path)

    def reset(self) -> None:
        with self._lock:
            self._store.clear()
            self._faults.clear()
            self._requests.clear()

    @contextlib.contextmanager
    def refusing(self) -> Iterator[None]:
        """A full outage: nothing listens (ECONNREFUSED) until the block exits.

        Open keep-alive connections are dropped too, or a pooled client would keep using them.
        """
        self._call(self._close_listener())
        try:
            yield
        finally:
            self._call(self._open_listener(self.port))

    # -- event-loop side ---------------------------------------------------------------------

    def _run_loop(self) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.run_until_complete(self._loop.shutdown_default_executor())
        finally:
            self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        assert self._loop is not None, "FaultProxy not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=15)

    async def _astart(self, port: int) -> None:
        self._client = httpx.AsyncClient(base_url=self.upstream, timeout=30.0)
        await self._open_listener(port)

    async def _astop(self) -> None:
        await self._close_listener()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _open_listener(self, port: int) -> None:
        self._server = await asyncio.start_server(self._on_connect, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = list(self._conn_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Own the task (rather than handing start_server a coroutine) so it can be cancelled on
        # stop without asyncio logging the cancellation as an unhandled callback error.
        assert self._loop is not None
        task = self._loop.create_task(self._serve_connection(reader, writer))
        self._conn_tasks.add(task)
        task.add_done_callback(self._conn_tasks.discard)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        conn = h11.Connection(h11.SERVER)
        drop = False
        try:
            while True:
                received = await self._read_request(conn, reader)
                if received is None:
                    return
                response = await self._handle(*received, reader)
                if response is None:
                    drop = True
                    return
                self._send(conn, writer, response)
                await writer.drain()
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (h11.ProtocolError, ConnectionError):
            drop = True
        finally:
            if drop:
                writer.transport.abort()
            else:
                writer.close()

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> tuple[h11.Request, bytes] | None:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return request, bytes(body)
            else:  # ConnectionClosed (client went away between requests) or PAUSED
                return None

    @staticmethod
    def _send(conn: h11.Connection, writer: asyncio.StreamWriter, response: _Response) -> None:
        headers = [
            ("content-type", response.content_type),
            ("content-length", str(len(response.body))),
        ]
        if response.replayed:
            headers.append(("idempotent-replayed", "true"))
        writer.write(conn.send(h11.Response(status_code=response.status, headers=headers)) or b"")
        writer.write(conn.send(h11.Data(data=response.body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")

    async def _handle(
        self, request: h11.Request, body: bytes, reader: asyncio.StreamReader
    ) -> _Response | None:
        """The response to send, or None to drop the connection without one."""
        method = request.method.decode()
        target = request.target.decode()
        path = target.partition("?")[0]
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        idempotency_key = headers.get("idempotency-key")

        with self._lock:
            self._requests.append(RequestRecord(method, path, idempotency_key))
            fault = self._take_fault(method, path)

        if fault == "refuse":
            return None
        if fault == "http_500":
            return _stripe_error(
                500, type="api_error", message="An unknown error occurred (injected by FaultProxy)."
            )

        delay = self.slow_seconds if fault == "slow" else 0.0
        if method == "POST" and idempotency_key:
            response = await self._idempotent(
                method, target, path, headers, body, idempotency_key, delay
            )
        else:
            response = await self._forward(method, target, headers, body, delay)

        if fault == "timeout_after_forward":
            await self._hang(reader)
            return None
        return response

    def _take_fault(self, method: str, path: str) -> FaultMode | None:
        for fault in self._faults:
            if fault.method == method and fault.path_contains in path:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault.mode
        return None

    async def _idempotent(
        self,
        method: str,
        target: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        idempotency_key: str,
        delay: float,
    ) -> _Response:
        # Stripe scopes keys per account; the API key stands in for the account here.
        key = (headers.get("authorization", ""), idempotency_key)
        fingerprint = _fingerprint(method, path, headers.get("content-type", ""), body)
        with self._lock:
            entry = self._store.get(key)
            if entry is None:
                mine = self._store[key] = _Entry(fingerprint)
        if entry is not None:
            if entry.fingerprint != fingerprint:
                return _stripe_error(
                    400,
                    type="idempotency_error",
                    message=(
                        "Keys for idempotent requests can only be used with the same parameters "
                        "they were first used with. Try using a key other than "
                        f"'{idempotency_key}' if you meant to execute a different request."
                    ),
                )
            if entry.response is None:
                return _stripe_error(
                    409,
                    type="idempotency_error",
                    code="idempotency_key_in_use",
                    message=(
                        "There is currently another in-progress request using this Idempotent "
                        "Key (that probably means you submitted twice, and the other request is "
                        "still going through). Please try again later."
                    ),
                )
            return _Response(
                entry.response.status, entry.response.body, entry.response.content_type, True
            )

        response: _Response | None = None
        try:
            response = await self._forward(method, target, headers, body, delay)
            return response
        finally:
            with self._lock:
                # A 5xx (or no answer at all) is not saved, so a retry executes again.
                if self._store.get(key) is mine:
                    if response is None or response.status >= 500:
                        del self._store[key]
                    else:
                        mine.response = response

    async def _forward(
        self, method: str, target: str, headers: dict[str, str], body: bytes, delay: float = 0.0
    ) -> _Response:
        assert self._client is not None
        if delay:
            # Inside the in-flight window, so a concurrent same-key request gets the 409.
            await asyncio.sleep(delay)
        upstream_headers = {k: v for k, v in headers.items() if k not in _SKIP_REQUEST_HEADERS}
        try:
            upstream = await self._client.request(
                method, target, headers=upstream_headers, content=body
            )
        except httpx.TransportError as exc:
            return _stripe_error(502, type="api_error", message=f"emulator unreachable: {exc!r}")
        content_type = upstream.headers.get("content-type", "application/json")
        return _Response(upstream.status_code, upstream.content, content_type)

    async def _hang(self, reader: asyncio.StreamReader) -> None:
        # Stop early once the client gives up and closes, so the task does not linger.
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(self.hang_seconds):
                while await reader.read(65536):
                    pass
