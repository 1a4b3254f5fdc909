"""Test harness: the real server binary (built by cargo) on 127.0.0.1, port 0."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def cargo_executable(*args: str) -> str:
    """Builds with cargo (a no-op when up to date) and returns the executable's path."""
    out = subprocess.run(
        ["cargo", "build", "--message-format=json-render-diagnostics", *args],
        cwd=REPO,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    for line in out.splitlines():
        message = json.loads(line)
        if message.get("executable"):
            return message["executable"]
    raise RuntimeError(f"cargo build {' '.join(args)} made no executable")


@pytest.fixture(scope="session")
def binaries() -> dict[str, str]:
    return {
        "cryptomem": os.environ.get("CRYPTOMEM_BIN") or cargo_executable("-p", "cryptomem", "--bin", "cryptomem"),
        "interop": cargo_executable("-p", "cryptomem-client", "--example", "interop"),
    }


class Server:
    """``cryptomem serve`` on a fresh data dir; stopped by the fixture."""

    def __init__(self, binary: str, root: Path, *extra: str):
        self.binary, self.root = binary, root
        self.data = root / "data"
        self.credentials = self.data / "credentials.toml"
        self.process = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--data", str(self.data), "--log", "warn", *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not self.credentials.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        time.sleep(0.1)  # the file is written before the listener takes connections
        self.value_key = root / "value.key"
        self.cli("keygen", "--out", str(self.value_key))

    def cli(self, *args: str, env: dict[str, str] | None = None) -> str:
        """Runs the cryptomem CLI with this server's credentials and value key; its stdout."""
        full_env = {**os.environ, **(env or {})}
        full_env.pop("CRYPTOMEM_TOKEN", None)
        cmd = [self.binary, *args]
        if args[0] != "keygen":
            cmd += ["--credentials", str(self.credentials), "--value-key-file", str(self.value_key)]
        result = subprocess.run(cmd, env=full_env, capture_output=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"cryptomem {' '.join(args)}: {result.stderr.decode()}")
        return result.stdout.decode()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def start_server(binaries, tmp_path_factory):
    servers: list[Server] = []

    def start(*extra: str) -> Server:
        server = Server(binaries["cryptomem"], tmp_path_factory.mktemp("server"), *extra)
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def server(start_server) -> Server:
    return start_server()


@pytest.fixture
def client(server):
    import cryptomem

    with cryptomem.Client.from_credentials(server.credentials, value_key=server.value_key) as c:
        yield c
