"""cryptomem: the Python client for the cryptomem secure cache.

Noise-encrypted connections pinned to the server's key, token auth, and values
sealed on the client with the same format, key files and key ids as the Rust
client, so either reads what the other wrote.

    import cryptomem
    client = cryptomem.Client.from_credentials("data/credentials.toml", value_key="value.key")
    client.set("greeting", "hello", ttl=60)
    client.get("greeting")  # b"hello"
"""

from .client import Client, Pipeline
from .credentials import Credentials
from .errors import (
    AuthError,
    BusyError,
    ConflictError,
    ConnectError,
    ConnectionLostError,
    ContendedError,
    CredentialsError,
    CryptomemError,
    HandshakeError,
    InvalidArgumentError,
    LockedError,
    NoAuthError,
    NoCursorError,
    NoPermError,
    NoValueKeyError,
    OOMError,
    PersistenceError,
    ProtocolError,
    RequestTimeoutError,
    ServerError,
    TooBigError,
    ValueCryptoError,
    WrongPassError,
)
from .hidden_names import HiddenNames
from .values import Keyring, ValueKey

__version__ = "0.1.0"
__all__ = [
    "AuthError",
    "BusyError",
    "Client",
    "ConflictError",
    "ConnectError",
    "ConnectionLostError",
    "ContendedError",
    "Credentials",
    "CredentialsError",
    "CryptomemError",
    "HandshakeError",
    "HiddenNames",
    "InvalidArgumentError",
    "Keyring",
    "LockedError",
    "NoAuthError",
    "NoCursorError",
    "NoPermError",
    "NoValueKeyError",
    "OOMError",
    "PersistenceError",
    "Pipeline",
    "ProtocolError",
    "RequestTimeoutError",
    "ServerError",
    "TooBigError",
    "ValueCryptoError",
    "ValueKey",
    "WrongPassError",
]
