"""Python and Rust read each other's values: the Rust client crate (its
``interop`` example) and the CLI, both ways, with binary and empty values
and non-ASCII key names, with and without hidden names. Plus the
known-answer values the Rust crate's tests pin."""

from __future__ import annotations

import subprocess

import pytest

import cryptomem
from cryptomem import HiddenNames, ValueKey

CASES = [
    ("plain", b"hello"),
    ("empty", b""),
    ("binary", bytes(range(256)) * 4),
    ("caf\u00e9:\u65e5\u672c\u8a9e", "\u00fcml\u00e4ut \U0001f511".encode()),
]


def rust(binaries, server, *args: str) -> list[str]:
    cmd = [binaries["interop"], str(server.credentials), str(server.value_key), *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60).stdout.splitlines()


@pytest.mark.parametrize("hidden", [False, True])
def test_python_and_the_rust_client_read_each_other(binaries, server, hidden):
    names = HiddenNames(ValueKey.load(server.value_key)) if hidden else None
    flag = ["--hide-names"] if hidden else []
    c = cryptomem.Client.from_credentials(server.credentials, value_key=server.value_key, hidden_names=names)
    for key, value in CASES:
        c.set("py:" + key, value)
    got = rust(binaries, server, *flag, *[a for key, _ in CASES for a in ("get", ("py:" + key).encode().hex())])
    assert got == [value.hex() for _, value in CASES], "Rust opens what Python sealed"

    rust(binaries, server, *flag, *[a for key, v in CASES for a in ("set", ("rs:" + key).encode().hex(), v.hex())])
    assert [c.get("rs:" + key) for key, _ in CASES] == [v for _, v in CASES], "Python opens what Rust sealed"
    assert rust(binaries, server, *flag, "get", b"never".hex()) == ["missing"]


def test_python_and_the_cli_read_each_other(server):
    c = cryptomem.Client.from_credentials(server.credentials, value_key=server.value_key)
    c.set("from:python:\u00e9", "caf\u00e9 au lait")
    c.set("from:python:empty", b"")
    assert server.cli("get", "from:python:\u00e9", "--raw") == "caf\u00e9 au lait\n"
    assert server.cli("get", "from:python:empty", "--raw") == "\n"
    server.cli("set", "from:cli:\u65e5", "\u65e5\u672c")
    server.cli("mset", "from:cli:a", "1", "from:cli:b", "")
    assert c.get("from:cli:\u65e5") == "\u65e5\u672c".encode()
    assert c.mget(["from:cli:a", "from:cli:b"]) == [b"1", b""]
    version = int(server.cli("getv", "from:python:empty", "--raw").split()[0])
    assert c.get_versioned("from:python:empty") == (version, b"")
    assert server.cli("dbsize", "--raw").strip() == str(c.dbsize())


def test_hidden_names_from_python_and_the_cli_agree(server):
    names = HiddenNames(ValueKey.load(server.value_key))
    c = cryptomem.Client.from_credentials(server.credentials, value_key=server.value_key, hidden_names=names)
    c.set("session:\u00e9", "one")
    assert server.cli("get", "session:\u00e9", "--hide-key-names", "--raw") == "one\n"
    server.cli("set", "session:cli", "two", "--hide-key-names")
    assert c.get("session:cli") == b"two"


def test_known_answers_match_the_rust_crate():
    assert ValueKey(bytes(32)).id == 0x15617A1D
    names = HiddenNames(ValueKey(b"\x11" * 32), b":")
    assert names.wire_name(b"session:abc") == b"session:2ef77cd914a6cfa3fed563f5ff5236f2"
    assert names.wire_prefix(b"session:") == b"session:"
    key = ValueKey.generate()
    assert ValueKey.from_key_file(key.key_file_text().encode()).id == key.id
    assert ValueKey.from_key_file(key.secret_bytes()).id == key.id
    assert ValueKey.from_key_file(key.secret_bytes().hex().upper().encode() + b"\n").id == key.id
    for bad in [b"cryptomem-value-key v2\n" + b"00" * 32, b"0x" + b"00" * 32, b"00" * 31]:
        with pytest.raises(cryptomem.ValueCryptoError):
            ValueKey.from_key_file(bad)
    assert key.secret_bytes().hex() not in repr(key)


def test_a_moved_or_tampered_value_does_not_open():
    ring = cryptomem.Keyring(ValueKey.generate())
    sealed = ring.seal(b"a", b"value")
    assert ring.open(b"a", sealed) == b"value"
    with pytest.raises(cryptomem.ValueCryptoError, match="moved"):
        ring.open(b"b", sealed)
    flipped = bytes([sealed[0]]) + sealed[1:20] + bytes([sealed[20] ^ 1]) + sealed[21:]
    with pytest.raises(cryptomem.ValueCryptoError, match="modified"):
        ring.open(b"a", flipped)
    with pytest.raises(cryptomem.ValueCryptoError, match="too short"):
        ring.open(b"a", sealed[:10])
