#!/usr/bin/env bash
# Side-by-side load test: Redis over TLS with AOF vs cryptomem, same machine,
# same load shape, alternating rounds; prints medians and cryptomem/Redis ratios.
#
# Usage: tools/compare-redis.sh            (defaults below, override by env)
#   ROUNDS=3 CLIENTS=50 REQUESTS=100000 SIZE=100 KEYSPACE=100000
#   PIPELINES="1 16" TESTS="set get" FSYNC=everysec
set -euo pipefail

ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-50}
REQUESTS=${REQUESTS:-100000}
SIZE=${SIZE:-100}
KEYSPACE=${KEYSPACE:-100000}
PIPELINES=${PIPELINES:-"1 16"}
TESTS=${TESTS:-"set get"}
FSYNC=${FSYNC:-everysec}

for tool in redis-server redis-benchmark redis-cli; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install redis-server redis-tools" >&2; exit 1; }
done
command -v openssl >/dev/null || { echo "openssl is missing: apt-get install openssl" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is missing: apt-get install python3" >&2; exit 1; }

root=$(cd "$(dirname "$0")/.." && pwd)
echo "building release binaries ..." >&2
(cd "$root" && cargo build --release --workspace -q)
cm="$root/target/release/cryptomem"
tool="$root/target/release/cryptomem-tool"

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/key.pem" -out "$work/cert.pem" -days 1 -subj /CN=127.0.0.1 >/dev/null 2>&1
mkdir -p "$work/redis"
rport=$(free_port)
redis-server --port 0 --bind 127.0.0.1 --tls-port "$rport" --tls-cert-file "$work/cert.pem" --tls-key-file "$work/key.pem" \
  --tls-ca-cert-file "$work/cert.pem" --tls-auth-clients no --appendonly yes --appendfsync "$FSYNC" --save "" \
  --dir "$work/redis" --daemonize no --loglevel warning >"$work/redis.log" 2>&1 &
pids+=($!)
cport=$(free_port)
"$cm" serve --data "$work/cm" --listen "127.0.0.1:$cport" --fsync "$FSYNC" --log warn >"$work/cm.out" 2>"$work/cm.log" &
pids+=($!)

for _ in $(seq 1 100); do
  redis-cli --tls --insecure -p "$rport" ping >/dev/null 2>&1 && [ -f "$work/cm/credentials.toml" ] && break
  sleep 0.1
done
redis-cli --tls --insecure -p "$rport" ping >/dev/null || { cat "$work/redis.log" >&2; exit 1; }
[ -f "$work/cm/credentials.toml" ] || { cat "$work/cm.log" >&2; exit 1; }

results="$work/results.tsv"
for round in $(seq 1 "$ROUNDS"); do
  for p in $PIPELINES; do
    for t in $TESTS; do
      echo "round $round: $t -P $p" >&2
      redis-benchmark --tls --insecure -p "$rport" -c "$CLIENTS" -n "$REQUESTS" -P "$p" -d "$SIZE" -r "$KEYSPACE" -t "$t" --csv 2>/dev/null \
        | python3 -c 'import csv,sys
rows=[r for r in csv.reader(sys.stdin)]
h=rows[0]; r=rows[1]
print("redis\t%s\t%s\t%s\t%s" % (sys.argv[1], sys.argv[2], r[h.index("rps")], r[h.index("p99_latency_ms")]))' "$t" "$p" >>"$results"
      "$tool" bench --credentials "$work/cm/credentials.toml" -c "$CLIENTS" -n "$REQUESTS" -P "$p" -d "$SIZE" -r "$KEYSPACE" -t "$t" --json \
        | python3 -c 'import json,sys
o=json.load(sys.stdin)[0]
print("cryptomem\t%s\t%s\t%s\t%s" % (sys.argv[1], sys.argv[2], o["ops_per_sec"], o["p99_ms"]))' "$t" "$p" >>"$results"
    done
  done
done

python3 - "$results" "$ROUNDS" "$CLIENTS" "$SIZE" "$KEYSPACE" "$FSYNC" <<'PY'
import statistics, sys
from collections import defaultdict
path, rounds, clients, size, keyspace, fsync = sys.argv[1:]
rps, p99 = defaultdict(list), defaultdict(list)
for line in open(path):
    who, test, pipe, r, l = line.split("\t")
    rps[(who, test, pipe)].append(float(r)); p99[(who, test, pipe)].append(float(l))
cells = sorted({(t, p) for (_, t, p) in rps}, key=lambda c: (c[0], int(c[1])))
import os
print(f"medians of {rounds} rounds: {clients} clients, {size}-byte values, {keyspace}-key keyspace, fsync {fsync}, {os.cpu_count()} cores")
print(f"{'test':<5} {'-P':>3} {'redis ops/s':>12} {'cryptomem ops/s':>16} {'ratio':>6}   {'redis p99':>10} {'cryptomem p99':>14}")
for t, p in cells:
    r = statistics.median(rps[("redis", t, p)]); c = statistics.median(rps[("cryptomem", t, p)])
    rl = statistics.median(p99[("redis", t, p)]); cl = statistics.median(p99[("cryptomem", t, p)])
    print(f"{t.upper():<5} {p:>3} {r:>12.0f} {c:>16.0f} {c / r:>6.2f}   {rl:>8.2f}ms {cl:>12.2f}ms")
PY
