"""Refusals: wrong pinned key, wrong token, NOAUTH, NOPERM, TOOBIG, nothing listening."""

from __future__ import annotations

import socket

import pytest

import cryptomem
from cryptomem import Credentials


def test_a_wrong_pinned_key_is_a_handshake_error_naming_the_reason(server):
    c = Credentials.load(server.credentials)
    wrong = cryptomem.Client(c.server, bytes(32 * [7]), c.token)
    with pytest.raises(cryptomem.HandshakeError) as e:
        wrong.ping()
    assert e.value.reason == 2 and "pinned" in str(e.value)
    # A rotation's previous key is tried after the current one is refused.
    both = cryptomem.Client(c.server, bytes(32 * [7]), c.token, previous_server_public_keys=(c.server_public_key,))
    assert both.ping() is True


def test_a_wrong_token_is_an_auth_error_and_the_token_is_never_shown(server):
    c = Credentials.load(server.credentials)
    bad = "cmt_" + c.token[4:16] + "_" + "0" * 64
    with pytest.raises(cryptomem.AuthError) as e:
        cryptomem.Client(c.server, c.server_public_key, bad).ping()
    assert e.value.code == "WRONGPASS"
    assert c.token not in repr(c) and "0" * 64 not in str(e.value)


def test_a_revoked_token_gets_noauth_on_its_next_request(server, client):
    reader_token = client.token_add("write", [], "soon revoked")
    c = Credentials.load(server.credentials)
    other = cryptomem.Client(c.server, c.server_public_key, reader_token, value_key=server.value_key)
    other.set("k", "v")
    client.token_revoke(reader_token.split("_")[1])
    with pytest.raises(cryptomem.NoAuthError):
        other.get("k")


def test_noperm_leaves_the_connection_usable(server, client):
    client.set("public:a", "1")
    token = client.token_add("read", ["public:"], "reader")
    c = Credentials.load(server.credentials)
    with cryptomem.Client(c.server, c.server_public_key, token, value_key=server.value_key) as reader:
        assert reader.get("public:a") == b"1"
        with pytest.raises(cryptomem.NoPermError):
            reader.set("public:a", "2")
        with pytest.raises(cryptomem.NoPermError):
            reader.get("private:b")
        results = reader.pipeline().get("public:a").set("public:b", "x").execute(raise_on_error=False)
        assert results[0] == b"1" and isinstance(results[1], cryptomem.NoPermError)
        assert reader.get("public:a") == b"1"


def test_toobig_closes_the_connection_and_the_next_call_reconnects(start_server):
    server = start_server("--max-value-size", "1KiB")
    with cryptomem.Client.from_credentials(server.credentials, value_key=server.value_key) as c:
        c.set("small", "x" * 100)
        with pytest.raises(cryptomem.TooBigError):
            c.set("big", "x" * 2000)
        assert c.get("small") == b"x" * 100


def test_nothing_listening_is_a_connect_error():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(cryptomem.ConnectError, match=f"127.0.0.1:{port}"):
        cryptomem.Client(f"127.0.0.1:{port}", bytes(32), "cmt_" + "0" * 12 + "_" + "0" * 64).ping()


def test_bad_credentials_files_are_named(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('format = "cryptomem-credentials"\nversion = 1\nserver = "h:1"\n')
    with pytest.raises(cryptomem.CredentialsError, match="missing"):
        Credentials.load(path)
    with pytest.raises(cryptomem.CredentialsError, match="No such file"):
        Credentials.load(tmp_path / "absent.toml")
