"""The blocking client and its pipeline."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from . import _protocol as p
from ._channel import Handshake, Records
from ._commands import UPDATE_ATTEMPTS, Command, Commands, KeyT, Queued, conflict_retry_pause, split_results, to_bytes
from .credentials import Credentials
from .errors import (
    AuthError,
    ConflictError,
    ConnectError,
    ConnectionLostError,
    ContendedError,
    HandshakeError,
    ProtocolError,
    RequestTimeoutError,
)
from .hidden_names import HiddenNames
from .values import Keyring, ValueKey

DEFAULT_MAX_RESPONSE = 512 * 1024 * 1024 + (1 << 20)


def split_address(server: str) -> tuple[str, int]:
    host, sep, port = server.rpartition(":")
    if not sep or not port.isdigit():
        raise ConnectError(f"cannot connect to {server}: expected host:port")
    return host.strip("[]"), int(port)


def make_keyring(value_key: Any, previous_value_keys: Any = ()) -> Keyring | None:
    """A keyring from a Keyring, a ValueKey, or a key file path (plus older keys/paths)."""
    if value_key is None or isinstance(value_key, Keyring):
        return value_key

    def load(k: Any) -> ValueKey:
        return k if isinstance(k, ValueKey) else ValueKey.load(k)

    return Keyring(load(value_key), [load(k) for k in previous_value_keys])


class ClientOptions:
    """Settings shared by the sync and asyncio clients (see :class:`Client`)."""

    def __init__(
        self,
        server: str,
        server_public_key: bytes,
        token: str,
        *,
        value_key: Any = None,
        previous_value_keys: Any = (),
        hidden_names: HiddenNames | None = None,
        previous_server_public_keys: tuple[bytes, ...] = (),
        connect_timeout: float = 10.0,
        request_timeout: float = 30.0,
        max_response_len: int = DEFAULT_MAX_RESPONSE,
    ):
        self.server = server
        self.pinned_keys = (bytes(server_public_key), *map(bytes, previous_server_public_keys))
        self.token = token.encode()
        self.keyring = make_keyring(value_key, previous_value_keys)
        self.hidden_names = hidden_names
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.max_response_len = max_response_len

    @classmethod
    def from_credentials(cls, path: str | os.PathLike, **options: Any) -> ClientOptions:
        c = Credentials.load(path)
        return cls(c.server, c.server_public_key, c.token, previous_server_public_keys=c.previous_server_public_keys, **options)

    def auth_frame(self) -> bytes:
        return p.encode_request(p.AUTH, value=self.token)


def auth_result(response: p.Response) -> None:
    if response.status != p.OK:
        code, _, message = response.body.decode("utf-8", "replace").partition(" ")
        error = AuthError(f"authentication failed: {code} {message}")
        error.code = code
        raise error


class _Connection:
    """One authenticated, encrypted socket."""

    def __init__(self, options: ClientOptions):
        self.options = options
        host, port = split_address(options.server)
        last: HandshakeError | None = None
        for pinned in options.pinned_keys:
            try:
                self.sock = socket.create_connection((host, port), timeout=options.connect_timeout)
            except OSError as e:
                raise ConnectError(f"cannot connect to {options.server}: {e.strerror or e}") from None
            try:
                self.records = self._handshake(pinned)
                break
            except HandshakeError as e:
                self.sock.close()
                last = e
                if e.reason != 2:
                    raise
        else:
            raise last or HandshakeError("no server key pinned")
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(options.request_timeout)
        try:
            auth_result(self.round_trip(options.auth_frame(), 1)[0])
        except BaseException:
            self.close()
            raise

    def _recv_exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise HandshakeError(f"handshake with {self.options.server} failed: the server closed the connection")
            out += chunk
        return out

    def _handshake(self, pinned: bytes) -> Records:
        hs = Handshake(pinned)
        try:
            self.sock.sendall(hs.opening())
            length = Handshake.reply_length(self._recv_exact(2))
            if length == 0:
                raise Handshake.rejected(self._recv_exact(1)[0], self.options.server)
            return hs.finish(self._recv_exact(length))
        except OSError as e:
            raise HandshakeError(f"handshake with {self.options.server} failed: {e}") from None

    def round_trip(self, frame: bytes, count: int) -> list[p.Response]:
        """Sends ``count`` encoded requests and reads their ``count`` responses."""
        try:
            self.sock.sendall(self.records.seal(frame))
            responses = []
            plaintext = self.records.plaintext
            while len(responses) < count:
                response = p.take_response(plaintext, self.options.max_response_len)
                if response is not None:
                    responses.append(response)
                    continue
                data = self.sock.recv(1 << 18)
                if not data:
                    raise ConnectionLostError("the server closed the connection")
                self.records.feed(data)
            return responses
        except socket.timeout:
            raise RequestTimeoutError(f"no response within {self.options.request_timeout} s") from None
        except OSError as e:
            raise ConnectionLostError(str(e)) from None

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class ClientBase(Commands):
    """Construction shared by :class:`Client` and the asyncio client."""

    def __init__(self, server: str, server_public_key: bytes, token: str, **options: Any):
        self._setup(ClientOptions(server, server_public_key, token, **options))

    def _setup(self, options: ClientOptions) -> None:
        self._options = options
        self._keyring = options.keyring
        self._names = options.hidden_names
        self._conn: Any = None

    @classmethod
    def from_credentials(cls, path: str | os.PathLike = "data/credentials.toml", **options: Any) -> Any:
        """A client from a credentials file (server, pinned keys, token) and ``options``."""
        client = cls.__new__(cls)
        client._setup(ClientOptions.from_credentials(path, **options))
        return client

    def __repr__(self) -> str:
        return f"{type(self).__name__}(server={self._options.server!r})"


class Client(ClientBase):
    """A blocking client over one encrypted connection.

    Thread-safe: calls from several threads are serialized on the connection
    (one request, or one pipeline, at a time); for parallel requests use
    one client per thread, or the asyncio client. A broken connection fails
    the call in flight with ConnectionLostError; the next call reconnects.

    ``value_key`` is a :class:`ValueKey`, a :class:`Keyring`, or the path of a
    key file (``cryptomem keygen``); without one only the ``*_raw`` calls work.
    """

    def _setup(self, options: ClientOptions) -> None:
        super()._setup(options)
        self._lock = threading.Lock()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> Client:
        """Connects and authenticates now, so configuration mistakes show up here."""
        with self._lock:
            self._connection()
        return self

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _connection(self) -> _Connection:
        if self._conn is None:
            self._conn = _Connection(self._options)
        return self._conn

    def _round_trip(self, frame: bytes, count: int) -> list[p.Response]:
        with self._lock:
            conn = self._connection()
            try:
                responses = conn.round_trip(frame, count)
            except (ConnectionLostError, RequestTimeoutError, ProtocolError):
                conn.close()
                self._conn = None
                raise
            if p.server_closes(responses):
                conn.close()
                self._conn = None
            return responses

    def _execute(self, command: Command) -> Any:
        responses = self._round_trip(command.frame, command.count) if command.count else []
        return command.parse(responses)

    def pipeline(self) -> Pipeline:
        """Commands queued and sent in one write: ``with client.pipeline() as p: p.set(...); p.get(...)``."""
        return Pipeline(self)

    def scan_iter(self, prefix: KeyT = b"", count: int = 1000) -> Iterator[bytes]:
        """Every key starting with ``prefix`` as of the first page (SCAN), page by page.
        Under hidden names the server's names are listed, and a prefix must be a namespace."""
        prefix, cursor = to_bytes(prefix), 0
        while True:
            cursor, keys = self._execute(self._scan_page(prefix, cursor, count))
            yield from keys
            if cursor == 0:
                return

    def update(self, key: KeyT, fn: Callable[[bytes | None], bytes | None]) -> bytes | None:
        """Read-modify-write without lost updates: ``fn(current or None)`` returns the new value
        (None deletes); retried on conflict. Returns what was stored."""
        for attempt in range(UPDATE_ATTEMPTS):
            current = self.get_versioned(key)
            version = current[0] if current else 0
            new = fn(current[1] if current else None)
            try:
                if new is not None:
                    self.set_if_version(key, new, version)
                elif version:
                    self.delete_if_version(key, version)
                return new
            except ConflictError:
                time.sleep(conflict_retry_pause(attempt))
        raise ContendedError(f"update gave up after {UPDATE_ATTEMPTS} attempts: the key kept changing")


class Pipeline(Queued):
    """Queued commands, sent in one write. Every command method returns the pipeline.

    ``execute()`` returns one result per command, in order. Commands are not
    atomic as a group. With ``raise_on_error`` (the default) the first failed
    command's exception is raised after all have run; otherwise exceptions
    are returned in place of results. Leaving a ``with`` block executes.
    """

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None and self._queued:
            self.execute()

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        queued, frame, count = self._take()
        responses = self._client._round_trip(frame, count) if count else []
        return split_results(queued, responses, raise_on_error)
