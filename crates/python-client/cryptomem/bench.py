"""Python client throughput against redis-py over TLS to Redis, on this machine.

    python -m cryptomem.bench --cryptomem-bin target/release/cryptomem [--rounds 3] [-n 20000]

Starts a cryptomem server and a Redis server (TLS, AOF everysec, as
``tools/compare-redis.sh`` runs it) in temporary directories on 127.0.0.1,
then for each round runs SET and GET with 100-byte values at pipeline 1 and
16 from one blocking client of each kind (cryptomem seals every value, as
applications do). Prints medians of the rounds: ops/s and client CPU per
request. Needs ``redis-server``, ``openssl`` and ``pip install redis``.
This is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import cryptomem


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what: str) -> None:
    deadline = time.monotonic() + 30
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.05)


def start_cryptomem(binary: str, work: Path) -> tuple[subprocess.Popen, Path, Path]:
    data = work / "data"
    process = subprocess.Popen(
        [binary, "serve", "--listen", f"127.0.0.1:{free_port()}", "--data", str(data), "--log", "warn"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for((data / "credentials.toml").exists, "cryptomem")
    key = work / "value.key"
    key.write_text(cryptomem.ValueKey.generate().key_file_text())
    key.chmod(0o600)
    return process, data / "credentials.toml", key


def start_redis(work: Path) -> tuple[subprocess.Popen, int]:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(work / "key.pem"),
         "-out", str(work / "cert.pem"), "-days", "1", "-subj", "/CN=127.0.0.1"],
        check=True, capture_output=True,
    )
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", "0", "--bind", "127.0.0.1", "--tls-port", str(port),
         "--tls-cert-file", str(work / "cert.pem"), "--tls-key-file", str(work / "key.pem"),
         "--tls-ca-cert-file", str(work / "cert.pem"), "--tls-auth-clients", "no",
         "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--dir", str(work)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    def up() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_for(up, "redis-server")
    return process, port


def run(client, test: str, pipeline: int, requests: int, value: bytes) -> tuple[float, float]:
    """ops/s and client CPU microseconds per request."""
    keys = [f"bench:key:{i % 10000}" for i in range(requests)]
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, requests, pipeline):
        batch = keys[start : start + pipeline]
        if pipeline == 1:
            client.set(batch[0], value) if test == "SET" else client.get(batch[0])
        else:
            p = client.pipeline()
            for k in batch:
                p.set(k, value) if test == "SET" else p.get(k)
            p.execute()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return requests / wall, cpu * 1e6 / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cryptomem-bin", default="target/release/cryptomem")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-n", "--requests", type=int, default=20000)
    args = parser.parse_args()
    import redis

    if not shutil.which("redis-server"):
        raise SystemExit("redis-server is missing: apt-get install redis-server")
    value = os.urandom(50).hex().encode()  # 100 bytes
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "c").mkdir()
        (work / "r").mkdir()
        cm_process, credentials, key = start_cryptomem(args.cryptomem_bin, work / "c")
        redis_process, redis_port = start_redis(work / "r")
        try:
            clients = {
                "cryptomem": cryptomem.Client.from_credentials(credentials, value_key=key),
                "redis-py TLS": redis.Redis(host="127.0.0.1", port=redis_port, ssl=True, ssl_cert_reqs=None),
            }
            results: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
            for _ in range(args.rounds):
                for test in ("SET", "GET"):
                    for pipeline in (1, 16):
                        for name, client in clients.items():
                            results.setdefault((name, test, pipeline), []).append(
                                run(client, test, pipeline, args.requests, value)
                            )
        finally:
            cm_process.terminate()
            redis_process.terminate()
            cm_process.wait()
            redis_process.wait()
    print(f"{'client':<14} {'test':<5} {'P':>3} {'ops/s':>9} {'client us/req':>14}   (median of {args.rounds}, -n {args.requests})")
    for (name, test, pipeline), rows in results.items():
        ops = statistics.median(r[0] for r in rows)
        cpu = statistics.median(r[1] for r in rows)
        print(f"{name:<14} {test:<5} {pipeline:>3} {ops:>9.0f} {cpu:>14.1f}")


if __name__ == "__main__":
    main()
