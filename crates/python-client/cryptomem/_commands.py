"""Every command once, for the sync and asyncio clients and their pipelines.

A command method builds a :class:`Command` (the encoded requests and how to
read their responses) and hands it to ``self._execute``. The sync client runs
it and returns the result; the asyncio client returns a coroutine; a pipeline
queues it and returns itself for chaining. So ``client.get(k)``,
``await aclient.get(k)`` and ``pipe.get(k)`` share one definition.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from . import _protocol as p
from .errors import CryptomemError, InvalidArgumentError, NoValueKeyError, ProtocolError, server_error
from .hidden_names import HiddenNames
from .values import Keyring

KeyT = str | bytes | bytearray | memoryview
ValueT = str | bytes | bytearray | memoryview | int | float
TtlT = int | float | timedelta | None


@dataclass(frozen=True)
class Command:
    """``count`` encoded requests in ``frame``, and ``parse`` for their responses."""

    frame: bytes
    count: int
    parse: Callable[[list[p.Response]], Any]


def to_bytes(x: ValueT) -> bytes:
    if isinstance(x, bytes):
        return x
    if isinstance(x, str):
        return x.encode("utf-8")
    if isinstance(x, (bytearray, memoryview)):
        return bytes(x)
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return str(x).encode()
    raise TypeError(f"expected str or bytes, not {type(x).__name__}")


def ttl_ns(ttl: TtlT, allow_none: bool = True) -> int:
    """A TTL in seconds (or a timedelta) as the wire's nanoseconds; None is 0 (no TTL)."""
    if ttl is None and allow_none:
        return 0
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else ttl
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds <= 0:
        raise InvalidArgumentError(f"a TTL is a number of seconds above zero, not {ttl!r}")
    return max(1, round(seconds * 1e9))


def checked(response: p.Response) -> p.Response:
    if response.status == p.ERROR:
        raise server_error(response.body)
    return response


def one(frame: bytes, read: Callable[[p.Response], Any]) -> Command:
    return Command(frame, 1, lambda rs: read(checked(rs[0])))


def found(response: p.Response) -> bool:
    return response.status == p.OK


def parse_info(body: bytes) -> dict[str, Any]:
    info: dict[str, Any] = {}
    for line in body.decode("utf-8", "replace").splitlines():
        if not line or line.startswith("#") or ":" not in line:
            continue
        name, _, value = line.partition(":")
        try:
            info[name] = int(value)
        except ValueError:
            try:
                info[name] = float(value)
            except ValueError:
                info[name] = value
    return info


class Commands:
    """The command methods. Subclasses define ``_execute``."""

    _keyring: Keyring | None = None
    _names: HiddenNames | None = None

    def _execute(self, command: Command) -> Any:
        raise NotImplementedError

    def _wire(self, key: KeyT) -> bytes:
        name = to_bytes(key)
        if not name:
            raise InvalidArgumentError("a key is at least 1 byte")
        return self._names.wire_name(name) if self._names else name

    def _ring(self) -> Keyring:
        if self._keyring is None:
            raise NoValueKeyError("this client has no value key: configure one to read or write encrypted values")
        return self._keyring

    def _seal(self, key: KeyT, value: ValueT) -> bytes:
        return self._ring().seal(to_bytes(key), to_bytes(value))

    def _opener(self, key: KeyT) -> Callable[[bytes | None], bytes | None]:
        ring, name = self._ring(), to_bytes(key)
        return lambda sealed: None if sealed is None else ring.open(name, sealed)

    # -- keys and values -------------------------------------------------

    def ping(self) -> Any:
        """PING: True."""
        return self._execute(one(p.encode_request(p.PING), lambda r: True))

    def get(self, key: KeyT) -> Any:
        """The opened value, or None if the key is missing."""
        opener = self._opener(key)
        return self._execute(
            one(p.encode_request(p.GET, self._wire(key)), lambda r: opener(r.body if found(r) else None))
        )

    def get_raw(self, key: KeyT) -> Any:
        """The stored bytes, unopened, or None."""
        return self._execute(one(p.encode_request(p.GET, self._wire(key)), lambda r: r.body if found(r) else None))

    def set(self, key: KeyT, value: ValueT, ttl: TtlT = None, nx: bool = False, xx: bool = False) -> Any:
        """Seals and stores; ttl in seconds or a timedelta. False when an nx/xx condition was not met."""
        return self._set(key, self._seal(key, value), ttl, nx, xx)

    def set_raw(self, key: KeyT, value: ValueT, ttl: TtlT = None, nx: bool = False, xx: bool = False) -> Any:
        """Stores bytes as given, without sealing."""
        return self._set(key, to_bytes(value), ttl, nx, xx)

    def _set(self, key: KeyT, stored: bytes, ttl: TtlT, nx: bool, xx: bool) -> Any:
        if nx and xx:
            raise InvalidArgumentError("nx and xx exclude each other")
        command = p.SETNX if nx else p.SETXX if xx else p.SET
        return self._execute(one(p.encode_request(command, self._wire(key), stored, ttl_ns(ttl)), found))

    def delete(self, *keys: KeyT) -> Any:
        """Deletes keys; the number that existed."""
        return self._count(p.DELETE, keys)

    def exists(self, *keys: KeyT) -> Any:
        """The number of the given keys that exist."""
        return self._count(p.EXISTS, keys)

    def _count(self, command: int, keys: tuple[KeyT, ...]) -> Any:
        if not keys:
            raise InvalidArgumentError("give at least one key")
        frame = b"".join(p.encode_request(command, self._wire(k)) for k in keys)
        return self._execute(Command(frame, len(keys), lambda rs: sum(found(checked(r)) for r in rs)))

    def expire(self, key: KeyT, ttl: TtlT) -> Any:
        """Sets a TTL (seconds or timedelta, above zero); whether the key exists."""
        return self._execute(one(p.encode_request(p.EXPIRE, self._wire(key), ttl_ns=ttl_ns(ttl, False)), found))

    def persist(self, key: KeyT) -> Any:
        """Removes a key's TTL; True if it had one (False: no TTL, or no key)."""
        return self._execute(
            one(p.encode_request(p.PERSIST, self._wire(key)), lambda r: found(r) and r.body[:1] == b"\x01")
        )

    def ttl(self, key: KeyT) -> Any:
        """Seconds to live (millisecond precision); -1 with no TTL, -2 for a missing key (as Redis)."""

        def read(r: p.Response) -> float:
            if not found(r):
                return -2
            ns = p.parse_i64(r.body, "TTL")
            return -1 if ns < 0 else ns / 1e9

        return self._execute(one(p.encode_request(p.TTL, self._wire(key)), read))

    def mget(self, keys: Iterable[KeyT]) -> Any:
        """Opened values in the order of ``keys``, None for missing ones; one request."""
        keys = list(keys)
        openers = [self._opener(k) for k in keys]
        return self._mget(keys, lambda items: [o(v) for o, v in zip(openers, items)])

    def mget_raw(self, keys: Iterable[KeyT]) -> Any:
        """Stored bytes in the order of ``keys``, unopened."""
        return self._mget(list(keys), lambda items: items)

    def _mget(self, keys: list[KeyT], finish: Callable[[list[bytes | None]], list]) -> Any:
        if not keys:
            return self._execute(Command(b"", 0, lambda rs: []))

        def read(r: p.Response) -> list:
            items = p.parse_mget(r.body)
            if len(items) != len(keys):
                raise ProtocolError(f"MGET asked for {len(keys)} keys, got {len(items)}")
            return finish(items)

        return self._execute(one(p.encode_request(p.MGET, value=p.key_list([self._wire(k) for k in keys])), read))

    def mset(self, mapping: Mapping[KeyT, ValueT] | Iterable[tuple[KeyT, ValueT]], ttl: TtlT = None) -> Any:
        """Seals and stores several values in one request (one TTL for all); True."""
        pairs = list(mapping.items() if isinstance(mapping, Mapping) else mapping)
        if not pairs:
            raise InvalidArgumentError("give at least one pair")
        encoded = [(self._wire(k), self._seal(k, v)) for k, v in pairs]
        return self._execute(one(p.encode_request(p.MSET, value=p.pair_list(encoded), ttl_ns=ttl_ns(ttl)), lambda r: True))

    # -- versions ----------------------------------------------------------

    def get_versioned(self, key: KeyT) -> Any:
        """``(version, opened value)``, or None for a missing key."""
        opener = self._opener(key)

        def read(r: p.Response) -> tuple[int, bytes] | None:
            if not found(r):
                return None
            if len(r.body) < 8:
                raise ProtocolError("GETV reply is shorter than its version")
            return struct.unpack(">Q", r.body[:8])[0], opener(r.body[8:])

        return self._execute(one(p.encode_request(p.GETV, self._wire(key)), read))

    def set_if_version(self, key: KeyT, value: ValueT, version: int, ttl: TtlT = None) -> Any:
        """Stores only if the key's version is ``version`` (0: only if absent); the new version.
        Raises ConflictError otherwise (nothing written)."""
        body = struct.pack(">Q", version) + self._seal(key, value)
        return self._execute(
            one(p.encode_request(p.SETV, self._wire(key), body, ttl_ns(ttl)), lambda r: p.parse_u64(r.body, "SETV"))
        )

    def delete_if_version(self, key: KeyT, version: int) -> Any:
        """Deletes only if the key's version is ``version``; ConflictError otherwise."""
        return self._execute(one(p.encode_request(p.DELETEV, self._wire(key), struct.pack(">Q", version)), found))

    # -- server ------------------------------------------------------------

    def dbsize(self) -> Any:
        """Number of keys."""
        return self._execute(one(p.encode_request(p.DBSIZE), lambda r: p.parse_u64(r.body, "DBSIZE")))

    def info(self) -> Any:
        """INFO as a dict of ``name: value`` (numbers as int or float)."""
        return self._execute(one(p.encode_request(p.INFO), lambda r: parse_info(r.body)))

    def save(self) -> Any:
        """Takes a snapshot now (admin); its cut sequence number."""
        return self._execute(one(p.encode_request(p.SAVE), lambda r: p.parse_u64(r.body, "SAVE")))

    def config_get(self, name: str) -> Any:
        """A run-time setting (admin): maxmemory, maxmemory-policy, maxmemory-samples."""
        return self._execute(one(p.encode_request(p.CONFIG_GET, name.encode()), lambda r: r.body.decode()))

    def config_set(self, name: str, value: str) -> Any:
        """Changes a run-time setting (admin) until the server stops; True."""
        frame = p.encode_request(p.CONFIG_SET, name.encode(), str(value).encode())
        return self._execute(one(frame, lambda r: True))

    def token_add(self, role: str, prefixes: Iterable[str] = (), label: str = "") -> Any:
        """Creates a token (admin): role ``read``, ``write`` or ``admin``; returns it, shown only here."""
        frame = p.encode_request(p.TOKEN_ADD, role.encode(), p.token_spec(label, list(prefixes)))
        return self._execute(one(frame, lambda r: r.body.decode()))

    def token_list(self) -> Any:
        """The tokens (admin): dicts with id, role, prefixes, label, created_unix_ms; never secrets."""
        from .credentials import tomllib

        return self._execute(
            one(p.encode_request(p.TOKEN_LIST), lambda r: tomllib.loads(r.body.decode()).get("token", []))
        )

    def token_revoke(self, token_id: str) -> Any:
        """Revokes a token (admin); whether it existed."""
        return self._execute(one(p.encode_request(p.TOKEN_REVOKE, token_id.encode()), found))

    def _scan_page(self, prefix: bytes, cursor: int, count: int) -> Command:
        wire_prefix = self._names.wire_prefix(prefix) if self._names else prefix
        frame = p.encode_request(p.SCAN, wire_prefix, struct.pack(">QI", cursor, count))
        return one(frame, lambda r: p.parse_scan(r.body))


class Queued(Commands):
    """A pipeline's queue: every command method queues and returns the pipeline.
    The sync and asyncio pipelines add only how ``execute`` sends."""

    def __init__(self, client: Commands):
        self._client = client
        self._keyring, self._names = client._keyring, client._names
        self._queued: list[Command] = []

    def __len__(self) -> int:
        return len(self._queued)

    def _execute(self, command: Command) -> Queued:
        self._queued.append(command)
        return self

    def _take(self) -> tuple[list[Command], bytes, int]:
        """Empties the queue: its commands, their frames joined, and the request count."""
        queued, self._queued = self._queued, []
        return queued, b"".join(c.frame for c in queued), sum(c.count for c in queued)


def split_results(queued: list[Command], responses: list[p.Response], raise_on_error: bool) -> list[Any]:
    """One result per queued command; exceptions in place, or the first raised."""
    results: list[Any] = []
    at = 0
    for command in queued:
        try:
            results.append(command.parse(responses[at : at + command.count]))
        except CryptomemError as e:
            results.append(e)
        at += command.count
    if raise_on_error:
        for r in results:
            if isinstance(r, CryptomemError):
                raise r
    return results


def conflict_retry_pause(attempt: int) -> float:
    """Seconds to pause after the ``attempt``-th conflict in ``update``, as the Rust client does."""
    return random.uniform(0, (100 << min(attempt, 6)) / 1e6)


UPDATE_ATTEMPTS = 64
