"""The encrypted channel: the connection opening and the records after it.

As ``crates/wire/src/secure/handshake.rs`` and ``record.rs`` document it:
the client sends the 8-byte preamble ``"CMEM" 01 00 00 00`` (also the Noise
prologue), then Noise_NK_25519_AESGCM_SHA256 message 1 with a big-endian u16
length. The server answers with message 2 (u16 length, 48..=1024) or a
rejection ``00 00 <reason>``. Then each direction is a sequence of records:
u16 length (16..=65535) + AES-256-GCM ciphertext, nonces counting from 0.
"""

from __future__ import annotations

import struct

from noise.connection import Keypair, NoiseConnection

from .errors import HandshakeError, ProtocolError

PREAMBLE = b"CMEM\x01\x00\x00\x00"
PROTOCOL_NAME = b"Noise_NK_25519_AESGCM_SHA256"
MAX_RECORD_PLAINTEXT = 65535 - 16
MIN_MESSAGE, MAX_MESSAGE = 48, 1024

REJECTIONS = {
    1: "the server refused the connection preamble (wire version mismatch)",
    2: "the server's key is not the pinned key (wrong server_public_key, or a rotated server key)",
    3: "the server is busy (at its connection limit)",
    4: "the server refused handshake message 1 as malformed",
}


class Handshake:
    """One client handshake: :meth:`opening` to send, then :meth:`finish` with the reply."""

    def __init__(self, server_public_key: bytes):
        self._noise = NoiseConnection.from_name(PROTOCOL_NAME)
        self._noise.set_as_initiator()
        self._noise.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, server_public_key)
        self._noise.set_prologue(PREAMBLE)
        self._noise.start_handshake()

    def opening(self) -> bytes:
        try:
            message1 = bytes(self._noise.write_message())
        except ValueError:  # a low-order point: X25519 refuses it, as the Rust client does
            raise HandshakeError("the pinned server key is not a usable X25519 public key") from None
        return PREAMBLE + struct.pack(">H", len(message1)) + message1

    @staticmethod
    def reply_length(first_two: bytes) -> int:
        """Message 2's length from the reply's first two bytes; 0 means a rejection follows (1 byte)."""
        (length,) = struct.unpack(">H", first_two)
        if length != 0 and not MIN_MESSAGE <= length <= MAX_MESSAGE:
            raise HandshakeError(f"handshake reply length {length} is out of range")
        return length

    @staticmethod
    def rejected(reason: int, addr: str) -> HandshakeError:
        why = REJECTIONS.get(reason, f"rejected with reason {reason}")
        return HandshakeError(f"handshake with {addr} failed: {why}", reason)

    def finish(self, message2: bytes) -> Records:
        try:
            self._noise.read_message(message2)
        except Exception as e:  # noiseprotocol raises several types for a bad message 2
            raise HandshakeError(f"handshake message 2 did not verify: {type(e).__name__}") from None
        if not self._noise.handshake_finished:
            raise HandshakeError("the handshake did not finish after message 2")
        return Records(self._noise)


class Records:
    """Seals outgoing bytes into records and opens incoming records into a plaintext buffer."""

    def __init__(self, noise: NoiseConnection):
        self._noise = noise
        self._incoming = bytearray()
        self.plaintext = bytearray()

    def seal(self, data: bytes) -> bytes:
        out = []
        view = memoryview(data)
        for at in range(0, len(view), MAX_RECORD_PLAINTEXT):
            ciphertext = self._noise.encrypt(bytes(view[at : at + MAX_RECORD_PLAINTEXT]))
            out += [struct.pack(">H", len(ciphertext)), ciphertext]
        return b"".join(out)

    def feed(self, data: bytes) -> None:
        """Adds received bytes; every whole record among them is opened onto :attr:`plaintext`."""
        self._incoming += data
        incoming = self._incoming
        at = 0
        while len(incoming) - at >= 2:
            (length,) = struct.unpack_from(">H", incoming, at)
            if length < 16:
                raise ProtocolError(f"record length {length} is below the 16-byte tag")
            if len(incoming) - at - 2 < length:
                break
            try:
                self.plaintext += self._noise.decrypt(bytes(incoming[at + 2 : at + 2 + length]))
            except Exception:  # InvalidTag or noiseprotocol's wrapper of it
                raise ProtocolError("a record failed authentication") from None
            at += 2 + length
        del incoming[:at]
