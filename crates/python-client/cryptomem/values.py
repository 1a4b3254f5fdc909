"""Client-side value sealing, byte for byte as the Rust client does it
(``crates/client/src/value_crypto.rs``), so either client opens what the other sealed.

Sealed value: version ``01``, key id (u32 BE), 12-byte random nonce,
AES-256-GCM ciphertext and tag. Associated data: the first 5 bytes, then the
key name (the real name, also under hidden names). Key id: the first 4 bytes of
``SHA-256(b"cryptomem value key id v1" + b"\\0" + key)``.
"""

from __future__ import annotations

import hashlib
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import ValueCryptoError

VERSION = 1
HEADER_LEN = 17
OVERHEAD = HEADER_LEN + 16
KEY_FILE_HEADER = "cryptomem-value-key v1"


class ValueKey:
    """A 256-bit value key. Its bytes never appear in ``repr``."""

    __slots__ = ("_bytes", "id", "_cipher")

    def __init__(self, key: bytes):
        if len(key) != 32:
            raise ValueCryptoError("a value key is 32 bytes")
        self._bytes = bytes(key)
        self.id = struct.unpack(">I", hashlib.sha256(b"cryptomem value key id v1\x00" + self._bytes).digest()[:4])[0]
        self._cipher = AESGCM(self._bytes)

    def __repr__(self) -> str:
        return f"ValueKey(id={self.id:08x})"

    @classmethod
    def generate(cls) -> ValueKey:
        return cls(os.urandom(32))

    @classmethod
    def from_key_file(cls, contents: bytes) -> ValueKey:
        """Parses a key file: 32 raw bytes, 64 hex digits, or ``cryptomem keygen``'s two-line form."""
        if len(contents) == 32:
            return cls(contents)
        try:
            text = contents.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueCryptoError("value key file is neither 32 raw bytes nor text") from None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines and lines[0] == KEY_FILE_HEADER:
            lines = lines[1:]
        elif lines and lines[0].startswith("cryptomem-value-key"):
            raise ValueCryptoError(f"unsupported value key file version `{lines[0]}`")
        if len(lines) > 1:
            raise ValueCryptoError("value key file has text after the key")
        hex_line = lines[0] if lines else ""
        if len(hex_line) != 64 or any(c not in "0123456789abcdefABCDEF" for c in hex_line):
            raise ValueCryptoError("value key file must hold 32 raw bytes or 64 hex digits")
        return cls(bytes.fromhex(hex_line))

    @classmethod
    def load(cls, path: str | os.PathLike) -> ValueKey:
        try:
            with open(path, "rb") as f:
                contents = f.read()
        except OSError as e:
            raise ValueCryptoError(f"cannot read value key file {os.fspath(path)}: {e.strerror}") from None
        try:
            return cls.from_key_file(contents)
        except ValueCryptoError as e:
            raise ValueCryptoError(f"{os.fspath(path)}: {e}") from None

    def key_file_text(self) -> str:
        """The text ``cryptomem keygen`` writes (keep it mode 0600)."""
        return f"{KEY_FILE_HEADER}\n{self._bytes.hex()}\n"

    def secret_bytes(self) -> bytes:
        return self._bytes


class Keyring:
    """One key that seals, plus older keys that still open values sealed before a rotation."""

    def __init__(self, current: ValueKey, previous: list[ValueKey] | tuple[ValueKey, ...] = ()):
        self.current = current
        self._by_id = {k.id: k for k in (*previous, current)}

    def __repr__(self) -> str:
        return f"Keyring(current={self.current!r}, keys={len(self._by_id)})"

    def seal(self, key_name: bytes, plaintext: bytes) -> bytes:
        header = struct.pack(">BI", VERSION, self.current.id)
        nonce = os.urandom(12)
        return header + nonce + self.current._cipher.encrypt(nonce, plaintext, header + key_name)

    def open(self, key_name: bytes, sealed: bytes) -> bytes:
        if len(sealed) < OVERHEAD:
            raise ValueCryptoError(f"stored value is not a sealed cryptomem value ({len(sealed)} bytes is too short)")
        if sealed[0] != VERSION:
            raise ValueCryptoError(f"stored value has sealed-format version {sealed[0]}; this client reads version 1")
        (key_id,) = struct.unpack_from(">I", sealed, 1)
        key = self._by_id.get(key_id)
        if key is None:
            raise ValueCryptoError(
                f"value was sealed with value key {key_id:08x}, which this client does not have "
                "(wrong value key file or passphrase?)"
            )
        try:
            return key._cipher.decrypt(sealed[5:HEADER_LEN], sealed[HEADER_LEN:], sealed[:5] + key_name)
        except InvalidTag:
            raise ValueCryptoError("value failed authentication: it was modified, or moved from another key") from None
