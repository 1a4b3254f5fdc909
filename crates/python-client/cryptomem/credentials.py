"""The credentials file ``cryptomem serve`` writes (``crates/client/src/credentials.rs``).

TOML: ``format = "cryptomem-credentials"``, ``version = 1``, ``server``
(``host:port``), ``server_public_key`` (64 hex digits), ``token``
(``cmt_<12 hex>_<64 hex>``), optional ``previous_server_public_keys``.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field

from .errors import CredentialsError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FORMAT, VERSION = "cryptomem-credentials", 1
TOKEN = re.compile(r"cmt_[0-9a-f]{12}_[0-9a-f]{64}")
REQUIRED = {"format", "version", "server", "server_public_key", "token"}
OPTIONAL = {"previous_server_public_keys"}


def parse_public_key(text: str) -> bytes:
    if len(text) != 64 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise CredentialsError("a server public key is 64 hex digits")
    return bytes.fromhex(text)


@dataclass(frozen=True)
class Credentials:
    server: str
    server_public_key: bytes
    token: str = field(repr=False)
    previous_server_public_keys: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if not TOKEN.fullmatch(self.token):
            raise CredentialsError("the token is not of the form cmt_<12 hex digits>_<64 hex digits>")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Credentials:
        where = os.fspath(path)
        try:
            with open(path, "rb") as f:
                form = tomllib.load(f)
        except OSError as e:
            raise CredentialsError(f"credentials file {where}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise CredentialsError(f"credentials file {where}: not TOML ({e})") from None
        unknown = set(form) - REQUIRED - OPTIONAL
        missing = REQUIRED - set(form)
        if unknown or missing:
            raise CredentialsError(f"credentials file {where}: unknown {sorted(unknown)}, missing {sorted(missing)}")
        if form["format"] != FORMAT or form["version"] != VERSION:
            raise CredentialsError(f"credentials file {where}: expected format `{FORMAT}` version {VERSION}")
        try:
            return cls(
                server=str(form["server"]),
                server_public_key=parse_public_key(str(form["server_public_key"])),
                token=str(form["token"]),
                previous_server_public_keys=tuple(
                    parse_public_key(str(k)) for k in form.get("previous_server_public_keys", [])
                ),
            )
        except CredentialsError as e:
            raise CredentialsError(f"credentials file {where}: {e}") from None
