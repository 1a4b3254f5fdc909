#!/usr/bin/env bash
# Two builds of cryptomem side by side: ops/s and server CPU per request for
# one bench test, alternating A and B for ROUNDS rounds (each round a fresh
# server on a free 127.0.0.1 port and a fresh data dir). Both builds must be
# built already (cargo build --release --workspace in each checkout).
#
# Usage: tools/ab-bench.sh A_CHECKOUT B_CHECKOUT
#   ROUNDS=5 TEST=set PIPELINE=16 CLIENTS=50 REQUESTS=300000 KEYSPACE=100000
#   SIZE=100 (value bytes before sealing); TEST=get first writes every key
#   of the keyspace once, unmeasured, so that GETs hit
#   WARMUP=0: requests of the same test sent first and not measured (a
#   store filled to its memory limit, so that every measured SET evicts)
#   A_ARGS / B_ARGS: extra `serve` flags per side, so one checkout can be
#   compared with itself under two settings, e.g. throughput at a memory
#   limit: A_ARGS= B_ARGS="--maxmemory 8MiB --maxmemory-policy allkeys-lru"
#   KEYSPACE=1000000 tools/ab-bench.sh . .
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 A_CHECKOUT B_CHECKOUT" >&2; exit 2; }
ROUNDS=${ROUNDS:-5}; TEST=${TEST:-set}; PIPELINE=${PIPELINE:-16}; CLIENTS=${CLIENTS:-50}; REQUESTS=${REQUESTS:-300000}
KEYSPACE=${KEYSPACE:-100000}; SIZE=${SIZE:-100}; WARMUP=${WARMUP:-0}
ticks=$(getconf CLK_TCK)

run() { # prints "ops_per_sec server_ns_per_request"
  local root=$1 args=$2 dir port pid t0 t1 out
  dir=$(mktemp -d)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$root/target/release/cryptomem" serve --listen "127.0.0.1:$port" --data "$dir/data" --log warn $args >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do [ -f "$dir/data/credentials.toml" ] && break; sleep 0.1; done
  sleep 0.5
  # GET on an empty store would measure misses: every key is written once
  # first, unmeasured, as compare-redis.sh runs SET before GET.
  if [ "$TEST" = get ]; then
    "$root/target/release/cryptomem-tool" bench --credentials "$dir/data/credentials.toml" \
      -c "$CLIENTS" -P "$PIPELINE" -r "$KEYSPACE" -d "$SIZE" -t fill >/dev/null 2>&1
  fi
  if [ "$WARMUP" -gt 0 ]; then
    "$root/target/release/cryptomem-tool" bench --credentials "$dir/data/credentials.toml" \
      -c "$CLIENTS" -P "$PIPELINE" -n "$WARMUP" -r "$KEYSPACE" -d "$SIZE" -t "$TEST" >/dev/null 2>&1
  fi
  t0=$(awk '{print $14+$15}' "/proc/$pid/stat")
  out=$("$root/target/release/cryptomem-tool" bench --credentials "$dir/data/credentials.toml" \
    -c "$CLIENTS" -P "$PIPELINE" -n "$REQUESTS" -r "$KEYSPACE" -d "$SIZE" -t "$TEST" --json 2>/dev/null)
  t1=$(awk '{print $14+$15}' "/proc/$pid/stat")
  kill "$pid"; wait "$pid" 2>/dev/null || true; rm -rf "$dir"
  local ops
  ops=$(echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); t=d[0] if isinstance(d,list) else d; print(int(t.get("ops_per_sec", t.get("ops", 0))))')
  echo "$ops $(( (t1 - t0) * 1000000000 / ticks / REQUESTS ))"
}

results=$(mktemp)
for i in $(seq "$ROUNDS"); do
  echo "A $(run "$1" "${A_ARGS:-}")" | tee -a "$results"
  echo "B $(run "$2" "${B_ARGS:-}")" | tee -a "$results"
done
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for side in "AB":
    ops = [int(r[1]) for r in rows if r[0] == side]
    ns = [int(r[2]) for r in rows if r[0] == side]
    print(f"{side}: median {statistics.median(ops):.0f} ops/s, server CPU {statistics.median(ns) / 1000:.2f} us per request")
PY
rm -f "$results"
