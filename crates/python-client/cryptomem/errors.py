"""Exceptions, mirroring the Rust client's error kinds (``cryptomem_client::Error``).

Every exception is a :class:`CryptomemError`. Errors the server answered
with are :class:`ServerError` subclasses chosen by the reply's code, so
``except NoPermError`` works like matching ``Error::Server { code: "NOPERM", .. }``.
Messages never contain tokens or key material.
"""

from __future__ import annotations


class CryptomemError(Exception):
    """Base of every cryptomem error."""


class ConnectError(CryptomemError):
    """The TCP connection could not be made (Rust ``Error::Connect``)."""


class HandshakeError(CryptomemError):
    """The encrypted channel could not be set up (Rust ``Error::Handshake``).

    ``reason`` is the server's rejection code when it sent one: 1 bad
    preamble, 2 the pinned server key is not the server's, 3 busy, 4 bad
    message length; ``None`` when the handshake failed otherwise.
    """

    def __init__(self, message: str, reason: int | None = None):
        super().__init__(message)
        self.reason = reason


class AuthError(CryptomemError):
    """The server refused the token (Rust ``Error::Auth``)."""


class ConnectionLostError(CryptomemError):
    """The connection broke with requests in flight; they may or may not have run."""


class RequestTimeoutError(CryptomemError):
    """No response within the request timeout (Rust ``Error::Timeout``)."""


class ProtocolError(CryptomemError):
    """The server sent something that is not valid protocol."""


class InvalidArgumentError(CryptomemError, ValueError):
    """An argument the protocol cannot carry (a key over 65,535 bytes, a zero TTL, ...)."""


class CredentialsError(CryptomemError):
    """A credentials file that cannot be used (never shows the token)."""


class ValueCryptoError(CryptomemError):
    """Sealing or opening a value failed: wrong value key, tampered or moved value, bad key file."""


class NoValueKeyError(CryptomemError):
    """A sealed-value call on a client made without a value key."""


class ContendedError(CryptomemError):
    """``update`` met a version conflict on every attempt."""


class ServerError(CryptomemError):
    """The server answered with an error: ``code`` (``ERR``, ``NOPERM``, ...) and ``message``."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message


class NoAuthError(ServerError):
    """``NOAUTH``: the first request was not AUTH, or the token was revoked."""


class WrongPassError(ServerError):
    """``WRONGPASS``: the token is not valid."""


class LockedError(ServerError):
    """``LOCKED``: this address is locked out after too many failed AUTHs."""


class BusyError(ServerError):
    """``BUSY``: the server is saturated; retry later."""


class NoPermError(ServerError):
    """``NOPERM``: the token's role or prefixes do not allow the command."""


class TooBigError(ServerError):
    """``TOOBIG``: a value or an MGET reply over the server's value limit."""


class OOMError(ServerError):
    """``OOM``: the write would exceed ``maxmemory`` under ``noeviction``."""


class PersistenceError(ServerError):
    """``IOERR``: the server cannot persist writes (full or failing disk); reads still work."""


class NoCursorError(ServerError):
    """``NOCURSOR``: a SCAN cursor expired or is unknown; start again."""


class ConflictError(ServerError):
    """``CONFLICT``: SETV/DELETEV with a version that is not the key's; nothing was written."""


_BY_CODE = {
    "NOAUTH": NoAuthError,
    "WRONGPASS": WrongPassError,
    "LOCKED": LockedError,
    "BUSY": BusyError,
    "NOPERM": NoPermError,
    "TOOBIG": TooBigError,
    "OOM": OOMError,
    "IOERR": PersistenceError,
    "NOCURSOR": NoCursorError,
    "CONFLICT": ConflictError,
}


def server_error(body: bytes) -> ServerError:
    """The exception for an error reply's body (``CODE message``); unknown codes are plain ``ServerError``."""
    text = body.decode("utf-8", "replace")
    code, _, message = text.partition(" ")
    return _BY_CODE.get(code, ServerError)(code, message)
