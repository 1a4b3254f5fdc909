"""Hidden key names, as ``crates/client/src/hidden_names.rs`` defines them.

The server sees ``P + hex(T)``: ``P`` is the name up to and including its
first separator (clear, so token prefixes keep working), ``T`` the first 16
bytes of ``HMAC-SHA256(K, name)``, and ``K = HKDF-SHA256(salt=None,
ikm=value key, info=b"cryptomem hidden key names v1")``.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import InvalidArgumentError
from .values import ValueKey

INFO = b"cryptomem hidden key names v1"


class HiddenNames:
    """Maps names to what the server sees. Keep the same value key for names across key rotations."""

    __slots__ = ("_key", "separator")

    def __init__(self, value_key: ValueKey, separator: bytes = b":"):
        if len(separator) != 1 or separator[0] > 0x7F:
            raise InvalidArgumentError("the separator is one ASCII character")
        self._key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=INFO).derive(value_key.secret_bytes())
        self.separator = separator

    def __repr__(self) -> str:
        return f"HiddenNames(separator={self.separator!r})"

    def wire_name(self, name: bytes) -> bytes:
        at = name.find(self.separator)
        clear = name[: at + 1] if at >= 0 else b""
        return clear + hmac.new(self._key, name, hashlib.sha256).digest()[:16].hex().encode()

    def wire_prefix(self, prefix: bytes) -> bytes:
        """A SCAN prefix: empty, or a whole namespace ending in the separator."""
        at = prefix.find(self.separator)
        if (at >= 0 and at + 1 == len(prefix)) or not prefix:
            return prefix
        raise InvalidArgumentError(
            "with hidden key names a SCAN prefix must be empty or a namespace ending in the separator"
        )
