"""The asyncio client: the same calls as :class:`cryptomem.Client`, awaited.

One connection per client, shared by every task: requests from concurrent
tasks are pipelined on it (written as they come, answered in order), so many
tasks do not wait for each other's round trips. Use it from one event loop.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable
from typing import Any

from . import _protocol as p
from ._channel import Handshake, Records
from ._commands import UPDATE_ATTEMPTS, Command, KeyT, Queued, conflict_retry_pause, split_results, to_bytes
from .client import ClientBase, ClientOptions, auth_result, split_address
from .errors import (
    ConflictError,
    ConnectError,
    ConnectionLostError,
    ContendedError,
    CryptomemError,
    HandshakeError,
    RequestTimeoutError,
)


class _AsyncConnection:
    """One authenticated, encrypted stream with a reader task answering waiters in order."""

    def __init__(self, options: ClientOptions):
        self.options = options
        self.waiters: collections.deque[tuple[int, list[p.Response], asyncio.Future]] = collections.deque()
        self.failed: CryptomemError | None = None

    @classmethod
    async def open(cls, options: ClientOptions) -> _AsyncConnection:
        conn = cls(options)
        host, port = split_address(options.server)
        last: HandshakeError | None = None
        for pinned in options.pinned_keys:
            try:
                conn.reader, conn.writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), options.connect_timeout
                )
            except (OSError, asyncio.TimeoutError) as e:
                raise ConnectError(f"cannot connect to {options.server}: {e or 'timed out'}") from None
            try:
                conn.records = await asyncio.wait_for(conn._handshake(pinned), options.connect_timeout)
                break
            except HandshakeError as e:
                conn.writer.close()
                last = e
                if e.reason != 2:
                    raise
            except asyncio.TimeoutError:
                conn.writer.close()
                raise HandshakeError(f"handshake with {options.server} timed out") from None
        else:
            raise last or HandshakeError("no server key pinned")
        conn.task = asyncio.get_running_loop().create_task(conn._read_loop())
        try:
            auth_result((await conn.submit(options.auth_frame(), 1))[0])
        except BaseException:
            conn.close()
            raise
        return conn

    async def _handshake(self, pinned: bytes) -> Records:
        hs = Handshake(pinned)
        try:
            self.writer.write(hs.opening())
            length = Handshake.reply_length(await self.reader.readexactly(2))
            if length == 0:
                raise Handshake.rejected((await self.reader.readexactly(1))[0], self.options.server)
            return hs.finish(await self.reader.readexactly(length))
        except (OSError, asyncio.IncompleteReadError) as e:
            raise HandshakeError(f"handshake with {self.options.server} failed: {e}") from None

    async def _read_loop(self) -> None:
        plaintext = self.records.plaintext
        try:
            while True:
                data = await self.reader.read(1 << 18)
                if not data:
                    raise ConnectionLostError("the server closed the connection")
                self.records.feed(data)
                while self.waiters:
                    response = p.take_response(plaintext, self.options.max_response_len)
                    if response is None:
                        break
                    count, got, future = self.waiters[0]
                    got.append(response)
                    if len(got) == count:
                        self.waiters.popleft()
                        if not future.done():
                            future.set_result(got)
        except (CryptomemError, OSError) as e:
            self._fail(e if isinstance(e, CryptomemError) else ConnectionLostError(str(e)))
        except asyncio.CancelledError:
            self._fail(ConnectionLostError("the connection was closed"))
            raise

    def _fail(self, error: CryptomemError) -> None:
        self.failed = error
        while self.waiters:
            future = self.waiters.popleft()[2]
            if not future.done():
                future.set_exception(ConnectionLostError(str(error)))
        self.writer.close()

    async def submit(self, frame: bytes, count: int) -> list[p.Response]:
        if self.failed is not None:
            raise ConnectionLostError(str(self.failed))
        future = asyncio.get_running_loop().create_future()
        # Queued and written with no await between: responses match in order.
        self.waiters.append((count, [], future))
        self.writer.write(self.records.seal(frame))
        try:
            await self.writer.drain()
            responses = await asyncio.wait_for(asyncio.shield(future), self.options.request_timeout)
            if p.server_closes(responses):
                self._fail(ConnectionLostError("the server closed the connection after an error"))
            return responses
        except asyncio.TimeoutError:
            raise RequestTimeoutError(f"no response within {self.options.request_timeout} s") from None
        except OSError as e:
            raise ConnectionLostError(str(e)) from None

    def close(self) -> None:
        if hasattr(self, "task"):
            self.task.cancel()
        self.writer.close()


class AsyncClient(ClientBase):
    """The asyncio counterpart of :class:`cryptomem.Client`: same arguments, same calls, awaited."""

    def _setup(self, options: ClientOptions) -> None:
        super()._setup(options)
        self._connecting = asyncio.Lock()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> AsyncClient:
        """Connects and authenticates now."""
        await self._connection()
        return self

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _connection(self) -> _AsyncConnection:
        async with self._connecting:
            if self._conn is None or self._conn.failed is not None:
                self._conn = await _AsyncConnection.open(self._options)
            return self._conn

    async def _round_trip(self, frame: bytes, count: int) -> list[p.Response]:
        conn = await self._connection()
        return await conn.submit(frame, count)

    def _execute(self, command: Command) -> Any:
        return self._run(command)

    async def _run(self, command: Command) -> Any:
        responses = await self._round_trip(command.frame, command.count) if command.count else []
        return command.parse(responses)

    def pipeline(self) -> AsyncPipeline:
        """``async with client.pipeline() as p: p.set(...); p.get(...)``, or ``await p.execute()``."""
        return AsyncPipeline(self)

    async def scan_iter(self, prefix: KeyT = b"", count: int = 1000) -> AsyncIterator[bytes]:
        """As :meth:`cryptomem.Client.scan_iter`: ``async for key in client.scan_iter(...)``."""
        prefix, cursor = to_bytes(prefix), 0
        while True:
            cursor, keys = await self._execute(self._scan_page(prefix, cursor, count))
            for key in keys:
                yield key
            if cursor == 0:
                return

    async def update(self, key: KeyT, fn: Callable[[bytes | None], bytes | None]) -> bytes | None:
        """As :meth:`cryptomem.Client.update`."""
        for attempt in range(UPDATE_ATTEMPTS):
            current = await self.get_versioned(key)
            version = current[0] if current else 0
            new = fn(current[1] if current else None)
            try:
                if new is not None:
                    await self.set_if_version(key, new, version)
                elif version:
                    await self.delete_if_version(key, version)
                return new
            except ConflictError:
                await asyncio.sleep(conflict_retry_pause(attempt))
        raise ContendedError(f"update gave up after {UPDATE_ATTEMPTS} attempts: the key kept changing")


class AsyncPipeline(Queued):
    """As :class:`cryptomem.Pipeline`, with ``await execute()`` and ``async with``."""

    async def __aenter__(self) -> AsyncPipeline:
        return self

    async def __aexit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None and self._queued:
            await self.execute()

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        queued, frame, count = self._take()
        responses = await self._client._round_trip(frame, count) if count else []
        return split_results(queued, responses, raise_on_error)


__all__ = ["AsyncClient", "AsyncPipeline"]
