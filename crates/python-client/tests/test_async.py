"""The asyncio client: the same calls, awaited, and many tasks over one connection."""

from __future__ import annotations

import asyncio

import pytest

import cryptomem
from cryptomem import Credentials
from cryptomem.asyncio import AsyncClient


async def test_every_call_awaited(server):
    async with AsyncClient.from_credentials(server.credentials, value_key=server.value_key) as c:
        assert await c.ping() is True
        assert await c.set("k", "v", ttl=60) is True and await c.get("k") == b"v"
        assert await c.set("k", "w", nx=True) is False
        assert 59 < await c.ttl("k") <= 60 and await c.persist("k") is True and await c.ttl("k") == -1
        assert await c.expire("k", 10) is True
        assert await c.exists("k", "nope") == 1
        assert await c.mset({"a": b"\x00", "b": ""}) is True
        assert await c.mget(["a", "nope", "b"]) == [b"\x00", None, b""]
        assert await c.dbsize() == 3 and "used_memory" in await c.info()
        version = await c.set_if_version("cas", "1", 0)
        assert await c.get_versioned("cas") == (version, b"1")
        with pytest.raises(cryptomem.ConflictError):
            await c.set_if_version("cas", "2", 0)
        assert await c.update("cas", lambda v: v + b"!") == b"1!"
        assert sorted([k async for k in c.scan_iter(count=2)]) == [b"a", b"b", b"cas", b"k"]
        assert await c.delete("a", "b", "nope") == 2
        assert await c.save() > 0


async def test_concurrent_tasks_share_the_connection_in_order(server):
    async with AsyncClient.from_credentials(server.credentials, value_key=server.value_key) as c:
        await asyncio.gather(*(c.set(f"k{i}", str(i)) for i in range(500)))
        values = await asyncio.gather(*(c.get(f"k{i}") for i in range(500)))
        assert values == [str(i).encode() for i in range(500)], "each task gets its own answer"

        counters = await asyncio.gather(
            *(c.update("counter", lambda v: str(int(v or 0) + 1).encode()) for _ in range(30))
        )
        assert len(counters) == 30 and await c.get("counter") == b"30", "no lost update"


async def test_pipelines_and_errors(server):
    async with AsyncClient.from_credentials(server.credentials, value_key=server.value_key) as c:
        async with c.pipeline() as p:
            p.set("x", "1").set("y", "2")
        assert await c.pipeline().get("x").get("y").exists("x", "y").execute() == [b"1", b"2", 2]
        token = await c.token_add("read", [], "async reader")
    creds = Credentials.load(server.credentials)
    async with AsyncClient(creds.server, creds.server_public_key, token, value_key=server.value_key) as reader:
        assert await reader.get("x") == b"1"
        with pytest.raises(cryptomem.NoPermError):
            await reader.set("x", "2")
        assert await reader.get("x") == b"1", "the connection stays usable"
    with pytest.raises(cryptomem.HandshakeError):
        await AsyncClient(creds.server, bytes(32), creds.token).connect()
    bad = "cmt_" + creds.token[4:16] + "_" + "1" * 64
    with pytest.raises(cryptomem.AuthError):
        await AsyncClient(creds.server, creds.server_public_key, bad).ping()
