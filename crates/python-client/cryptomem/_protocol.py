"""Requests and responses, as ``crates/wire/src/protocol/mod.rs`` documents them.

Pure encode/decode, no I/O. All integers are big-endian.
Request: ``"CM"``, command u8, key_len u16, val_len u32, ttl i64 (ns), key, value.
Response: ``"CM"``, status u8 (0 not found, 1 OK, 2 error), body_len u32, body.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import InvalidArgumentError, ProtocolError

MAGIC = b"CM"
REQUEST_HEADER = struct.Struct(">2sBHIq")
RESPONSE_HEADER = struct.Struct(">2sBI")
MAX_KEY_LEN = 0xFFFF
HARD_MAX_VALUE_LEN = 512 * 1024 * 1024

SET, GET, DELETE, PING, AUTH, EXISTS, EXPIRE, PERSIST, TTL = range(1, 10)
MGET, MSET, DBSIZE, INFO, SETNX, SETXX, SAVE = range(10, 17)
TOKEN_ADD, TOKEN_LIST, TOKEN_REVOKE, CONFIG_GET, CONFIG_SET = range(17, 22)
SCAN, GETV, SETV, DELETEV = range(22, 26)

NOT_FOUND, OK, ERROR = 0, 1, 2

# Error codes after which the server closes the connection (TOOBIG only for
# a request over the limit, but reconnecting after an MGET's costs little).
CLOSING_CODES = (b"NOAUTH ", b"WRONGPASS ", b"LOCKED ", b"BUSY ", b"TIMEOUT ", b"PROTO ", b"TOOBIG ")


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes


def encode_request(command: int, key: bytes = b"", value: bytes = b"", ttl_ns: int = 0) -> bytes:
    if len(key) > MAX_KEY_LEN:
        raise InvalidArgumentError(f"a key is at most {MAX_KEY_LEN} bytes, not {len(key)}")
    if len(value) > HARD_MAX_VALUE_LEN:
        raise InvalidArgumentError(f"a value is at most {HARD_MAX_VALUE_LEN} bytes, not {len(value)}")
    return REQUEST_HEADER.pack(MAGIC, command, len(key), len(value), ttl_ns) + key + value


def key_list(keys: list[bytes]) -> bytes:
    out = [struct.pack(">I", len(keys))]
    for k in keys:
        if len(k) > MAX_KEY_LEN:
            raise InvalidArgumentError(f"a key is at most {MAX_KEY_LEN} bytes, not {len(k)}")
        out += [struct.pack(">H", len(k)), k]
    return b"".join(out)


def pair_list(pairs: list[tuple[bytes, bytes]]) -> bytes:
    out = [struct.pack(">I", len(pairs))]
    for k, v in pairs:
        if len(k) > MAX_KEY_LEN:
            raise InvalidArgumentError(f"a key is at most {MAX_KEY_LEN} bytes, not {len(k)}")
        out += [struct.pack(">HI", len(k), len(v)), k, v]
    return b"".join(out)


def token_spec(label: str, prefixes: list[str]) -> bytes:
    label_bytes = label.encode()
    out = [struct.pack(">H", len(label_bytes)), label_bytes, struct.pack(">I", len(prefixes))]
    for p in prefixes:
        b = p.encode()
        out += [struct.pack(">H", len(b)), b]
    return b"".join(out)


def take_response(buffer: bytearray, max_body: int) -> Response | None:
    """Removes one whole response from the front of ``buffer``; ``None`` until one is there."""
    if len(buffer) < RESPONSE_HEADER.size:
        return None
    magic, status, length = RESPONSE_HEADER.unpack_from(buffer)
    if magic != MAGIC or status > ERROR:
        raise ProtocolError("response does not start with the CM magic and a known status")
    if length > max_body:
        raise ProtocolError(f"response body of {length} bytes is over the limit of {max_body}")
    end = RESPONSE_HEADER.size + length
    if len(buffer) < end:
        return None
    body = bytes(buffer[RESPONSE_HEADER.size : end])
    del buffer[:end]
    return Response(status, body)


def server_closes(responses: list[Response]) -> bool:
    """Whether one of these answers means the server is closing the connection."""
    return any(r.status == ERROR and r.body.startswith(CLOSING_CODES) for r in responses)


class _Reader:
    """Reads fields from a reply body, failing with ProtocolError if it is short."""

    def __init__(self, body: bytes, what: str):
        self.body, self.at, self.what = memoryview(body), 0, what

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.body):
            raise ProtocolError(f"{self.what} reply is truncated")
        out = bytes(self.body[self.at : self.at + n])
        self.at += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack(">H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack(">Q", self.take(8))[0]

    def done(self) -> None:
        if self.at != len(self.body):
            raise ProtocolError(f"{self.what} reply has bytes after its end")


def parse_mget(body: bytes) -> list[bytes | None]:
    r = _Reader(body, "MGET")
    items: list[bytes | None] = []
    for _ in range(r.u32()):
        present, length = r.u8(), r.u32()
        items.append(r.take(length) if present else None)
    r.done()
    return items


def parse_scan(body: bytes) -> tuple[int, list[bytes]]:
    r = _Reader(body, "SCAN")
    cursor = r.u64()
    keys = [r.take(r.u16()) for _ in range(r.u32())]
    r.done()
    return cursor, keys


def parse_u64(body: bytes, what: str) -> int:
    if len(body) != 8:
        raise ProtocolError(f"{what} reply is not 8 bytes")
    return struct.unpack(">Q", body)[0]


def parse_i64(body: bytes, what: str) -> int:
    if len(body) != 8:
        raise ProtocolError(f"{what} reply is not 8 bytes")
    return struct.unpack(">q", body)[0]
