"""Every command through the blocking client, against the real server."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

import cryptomem
from cryptomem import HiddenNames, Keyring, ValueKey


def test_set_get_and_the_value_types(client):
    assert client.ping() is True
    assert client.set("greeting", "hello") is True
    assert client.get("greeting") == b"hello"
    assert client.get("missing") is None
    for key, value in [("bin", bytes(range(256))), ("empty", b""), ("caf\u00e9:\u65e5\u672c", "\u00fcml\u00e4ut"), (b"\xffraw", 42)]:
        client.set(key, value)
        expected = value.encode() if isinstance(value, str) else str(value).encode() if isinstance(value, int) else value
        assert client.get(key) == expected
    assert client.get_raw("greeting") != b"hello", "the server holds ciphertext"
    assert len(client.get_raw("greeting")) == 5 + 33
    assert client.set_raw("plain", b"as is") and client.get_raw("plain") == b"as is"
    with pytest.raises(cryptomem.InvalidArgumentError):
        client.set("", "v")
    with pytest.raises(TypeError):
        client.set("k", object())


def test_conditions_ttls_and_counts(client):
    assert client.set("k", "1", nx=True) is True
    assert client.set("k", "2", nx=True) is False
    assert client.set("absent", "2", xx=True) is False
    assert client.set("k", "3", xx=True) is True and client.get("k") == b"3"
    with pytest.raises(cryptomem.InvalidArgumentError):
        client.set("k", "v", nx=True, xx=True)
    assert client.ttl("k") == -1 and client.ttl("absent") == -2
    assert client.expire("k", 100) is True and 99 < client.ttl("k") <= 100
    assert client.expire("absent", 5) is False
    assert client.persist("k") is True and client.persist("k") is False and client.persist("absent") is False
    client.set("short", "v", ttl=timedelta(milliseconds=50))
    time.sleep(0.12)
    assert client.get("short") is None
    with pytest.raises(cryptomem.InvalidArgumentError):
        client.expire("k", 0)
    client.set("other", "v")
    assert client.exists("k", "other", "absent") == 2
    assert client.delete("k", "other", "absent") == 2
    assert client.exists("k") == 0


def test_mget_mset_dbsize_info_save_config(client):
    assert client.mset({"a": "1", "b": b"\x00", "c": ""}, ttl=3600) is True
    assert client.mset([("d", "4")]) is True
    assert client.mget(["a", "zz", "b", "c", "d"]) == [b"1", None, b"\x00", b"", b"4"]
    assert client.mget([]) == []
    assert [v is None for v in client.mget_raw(["a", "zz"])] == [False, True]
    assert 3590 < client.ttl("a") <= 3600
    assert client.dbsize() == 4
    info = client.info()
    assert info["connected_clients"] >= 1 and "used_memory" in info
    assert client.save() > 0
    assert client.info()["snapshots_taken"] >= 1
    assert client.config_get("maxmemory-policy")
    assert client.config_set("maxmemory", "64MiB") is True
    assert client.config_get("maxmemory") == str(64 << 20)
    with pytest.raises(cryptomem.ServerError) as e:
        client.config_set("nonsense", "1")
    assert e.value.code == "ERR"


def test_versions_and_update(client):
    version = client.set_if_version("cas", "one", 0)
    assert client.get_versioned("cas") == (version, b"one")
    with pytest.raises(cryptomem.ConflictError):
        client.set_if_version("cas", "two", 0)
    assert client.get("cas") == b"one", "nothing written on a conflict"
    newer = client.set_if_version("cas", "two", version)
    assert newer > version
    with pytest.raises(cryptomem.ConflictError):
        client.delete_if_version("cas", version)
    assert client.delete_if_version("cas", newer) is True
    assert client.get_versioned("cas") is None

    def bump(v: bytes | None) -> bytes:
        return str(int(v or 0) + 1).encode()

    threads = [threading.Thread(target=lambda: [client.update("counter", bump) for _ in range(25)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert client.get("counter") == b"100", "no lost update across threads"
    assert client.update("counter", lambda v: None) is None and client.get("counter") is None


def test_scan_lists_every_key_once_page_by_page(client):
    client.mset({f"user:{i}": "v" for i in range(250)})
    client.mset({f"other:{i}": "v" for i in range(10)})
    listed = list(client.scan_iter("user:", count=7))
    assert sorted(listed) == sorted(f"user:{i}".encode() for i in range(250))
    assert len(list(client.scan_iter())) == 260


def test_pipelines_send_once_and_answer_in_order(client):
    with client.pipeline() as p:
        p.set("p1", "a").set("p2", "b", ttl=60)
    assert client.mget(["p1", "p2"]) == [b"a", b"b"]
    p = client.pipeline()
    p.get("p1").get("nope").exists("p1", "p2").delete("p1").ttl("p2").mget(["p1", "p2"]).dbsize()
    assert len(p) == 7
    results = p.execute()
    assert results[:4] == [b"a", None, 2, 1]
    assert 59 < results[4] <= 60
    assert results[5:] == [[None, b"b"], 1]
    assert p.execute() == [], "a pipeline is empty after execute"


def test_threads_share_one_client(client):
    errors = []

    def work(t: int) -> None:
        try:
            for i in range(50):
                client.set(f"t{t}:{i}", f"{t}-{i}")
                assert client.get(f"t{t}:{i}") == f"{t}-{i}".encode()
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert client.dbsize() == 400


def test_tokens_roles_and_revocation(server, client):
    token = client.token_add("read", ["public:"], "reader")
    assert token.startswith("cmt_")
    listed = {t["label"]: t for t in client.token_list()}
    assert listed["reader"]["role"] == "read" and listed["reader"]["prefixes"] == ["public:"]
    assert token not in str(client.token_list())
    token_id = token.split("_")[1]
    assert client.token_revoke(token_id) is True and client.token_revoke(token_id) is False


def test_hidden_names_and_key_rotation(server):
    old, new = ValueKey.load(server.value_key), ValueKey.generate()
    names = HiddenNames(old)
    with cryptomem.Client.from_credentials(server.credentials, value_key=old, hidden_names=names) as c:
        c.set("session:abc", "secret")
        assert c.get("session:abc") == b"secret"
        assert list(c.scan_iter("session:")) == [names.wire_name(b"session:abc")]
        with pytest.raises(cryptomem.InvalidArgumentError):
            list(c.scan_iter("sess"))
    with cryptomem.Client.from_credentials(server.credentials) as plain:
        assert plain.get_raw("session:abc") is None, "the clear name never reaches the server"
        assert plain.get_raw(names.wire_name(b"session:abc")) is not None
        with pytest.raises(cryptomem.NoValueKeyError):
            plain.get("session:abc")
    by_path = {"value_key": new, "previous_value_keys": [server.value_key], "hidden_names": names}
    with cryptomem.Client.from_credentials(server.credentials, **by_path) as c:
        assert c.get("session:abc") == b"secret", "a previous key given as a key file path opens"
    rotated = Keyring(new, [old])
    with cryptomem.Client.from_credentials(server.credentials, value_key=rotated, hidden_names=names) as c:
        assert c.get("session:abc") == b"secret", "the previous key still opens"
        c.set("session:abc", "resealed")
    with cryptomem.Client.from_credentials(server.credentials, value_key=old, hidden_names=names) as c:
        with pytest.raises(cryptomem.ValueCryptoError, match="does not have"):
            c.get("session:abc")
