#!/usr/bin/env bash
# Server RSS over a long mixed load, with the server snapshotting every
# SNAP_WRITES changes: does memory stay flat? Samples RSS every SAMPLE seconds
# and prints the median of the first and last 10% of samples, the peak, and
# RSS 30 s after the load stopped. One server on 127.0.0.1 (a free port), a
# fresh data dir, stopped at the end.
#
# Usage: tools/memory-soak.sh            (defaults below, override by env)
#   DURATION=1800 SNAP_WRITES=50000 CLIENTS=50 PIPELINE=1 SIZE=100 KEYSPACE=100000
#   SAMPLE=5 OUT=/tmp/memory-soak.csv EXTRA_ARGS="" (more serve flags)
#   STALL=1: every 60 s write 256 MB beside the data dir with fsync, to
#   compete with the log's fsyncs (mild on a fast disk)
set -euo pipefail

DURATION=${DURATION:-1800}
SNAP_WRITES=${SNAP_WRITES:-50000}
CLIENTS=${CLIENTS:-50}
PIPELINE=${PIPELINE:-1}
SIZE=${SIZE:-100}
KEYSPACE=${KEYSPACE:-100000}
SAMPLE=${SAMPLE:-5}
OUT=${OUT:-/tmp/memory-soak.csv}
EXTRA_ARGS=${EXTRA_ARGS:-}
STALL=${STALL:-0}

root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$root/Cargo.toml" --workspace
bin="$root/target/release"
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# shellcheck disable=SC2086
"$bin/cryptomem" serve --listen "127.0.0.1:$port" --data "$dir/data" --log warn \
  --snapshot-after-writes "$SNAP_WRITES" $EXTRA_ARGS &
server=$!
staller=""
trap 'kill $server $staller 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$dir"' EXIT
if [ "$STALL" = 1 ]; then
  (while sleep 60; do dd if=/dev/zero of="$dir/stall" bs=1M count=256 conv=fsync 2>/dev/null; rm -f "$dir/stall"; done) &
  staller=$!
fi
for _ in $(seq 100); do [ -f "$dir/data/credentials.toml" ] && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2}' "/proc/$server/status"; }

echo "seconds,rss_kib" >"$OUT"
start=$(date +%s)
"$bin/cryptomem-tool" bench --credentials "$dir/data/credentials.toml" -c "$CLIENTS" -P "$PIPELINE" -d "$SIZE" \
  -r "$KEYSPACE" -t mixed -n 1000000000 --duration "${DURATION}s" >/dev/null &
load=$!
while kill -0 $load 2>/dev/null; do
  echo "$(( $(date +%s) - start )),$(rss)" >>"$OUT"
  sleep "$SAMPLE"
done
wait $load
sleep 30
after=$(rss)
snapshots=$(ls "$dir/data" | grep -c '^snapshot-' || true)
python3 - "$OUT" "$after" <<'PY'
import csv, statistics, sys
rows = [(int(r["seconds"]), int(r["rss_kib"])) for r in csv.DictReader(open(sys.argv[1])) if r["rss_kib"]]
# The first minute fills the keyspace; "first" starts after it.
steady = [kib for s, kib in rows if s >= 60] or [kib for _, kib in rows]
rows = [kib for _, kib in rows]
tenth = max(1, len(steady) // 10)
mib = lambda k: f"{k / 1024:.1f} MiB"
print(f"samples {len(rows)}; RSS median first 10% after 60 s {mib(statistics.median(steady[:tenth]))}, "
      f"last 10% {mib(statistics.median(steady[-tenth:]))}, peak {mib(max(rows))}, "
      f"30 s after the load {mib(int(sys.argv[2]))}")
PY
echo "INFO persistence:"
"$bin/cryptomem" info --credentials "$dir/data/credentials.toml" 2>/dev/null | grep -E 'snapshots_taken|used_memory|keys' || true
