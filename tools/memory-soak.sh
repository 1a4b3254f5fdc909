#!/usr/bin/env bash
# Server RSS, data dir size and file count over a long mixed load, with
# the server snapshotting every SNAP_WRITES changes: do they stay flat?
# Samples every SAMPLE seconds and prints the median of the first and last
# 10% of samples, the peaks, and RSS 30 s after the load stopped. Fails
# (exit 1) when the last tenth's RSS median exceeds the first's by more than
# RSS_GROWTH (1.25x), the data dir's by more than DIR_GROWTH (2x), or the
# data dir ever holds more than MAX_FILES files (10: five fixed ones, and
# snapshots, a snapshot being written and log segments coming and going).
# One server on 127.0.0.1 (a free port), a fresh data dir, stopped at the end.
#
# Usage: tools/memory-soak.sh            (defaults below, override by env)
#   DURATION=1800 SNAP_WRITES=50000 CLIENTS=50 PIPELINE=1 SIZE=100 KEYSPACE=100000
#   SAMPLE=5 OUT=/tmp/memory-soak.csv EXTRA_ARGS="" (more serve flags)
#   TTL=30s: every SET expires after this long (empty: no TTL)
#   RSS_GROWTH=1.25 DIR_GROWTH=2 MAX_FILES=10: the bounds that fail the run
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
TTL=${TTL:-}
RSS_GROWTH=${RSS_GROWTH:-1.25}
DIR_GROWTH=${DIR_GROWTH:-2}
MAX_FILES=${MAX_FILES:-10}

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
dir_kib() { du -sk "$dir/data" | cut -f1; }
files() { find "$dir/data" -maxdepth 1 -type f | wc -l; }

echo "seconds,rss_kib,dir_kib,files" >"$OUT"
start=$(date +%s)
ttl_args=()
[ -n "$TTL" ] && ttl_args=(--ttl "$TTL")
"$bin/cryptomem-tool" bench --credentials "$dir/data/credentials.toml" -c "$CLIENTS" -P "$PIPELINE" -d "$SIZE" \
  -r "$KEYSPACE" -t mixed -n 1000000000 --duration "${DURATION}s" "${ttl_args[@]}" >/dev/null &
load=$!
while kill -0 $load 2>/dev/null; do
  echo "$(( $(date +%s) - start )),$(rss),$(dir_kib),$(files)" >>"$OUT"
  sleep "$SAMPLE"
done
wait $load
sleep 30
after=$(rss)
snapshots=$(ls "$dir/data" | grep -c '^snapshot-' || true)
verdict=0
python3 - "$OUT" "$after" "$RSS_GROWTH" "$DIR_GROWTH" "$MAX_FILES" <<'PY' || verdict=1
import csv, statistics, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["rss_kib"] and r["dir_kib"]]
rss_growth, dir_growth, max_files = float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
# The first minute fills the keyspace; "first" starts after it.
steady = [r for r in rows if int(r["seconds"]) >= 60] or rows
tenth = max(1, len(steady) // 10)
mib = lambda k: f"{k / 1024:.1f} MiB"
def first_last(field):
    values = [int(r[field]) for r in steady]
    return statistics.median(values[:tenth]), statistics.median(values[-tenth:]), max(int(r[field]) for r in rows)
r0, r1, rpeak = first_last("rss_kib")
d0, d1, dpeak = first_last("dir_kib")
_, _, fpeak = first_last("files")
print(f"samples {len(rows)}; RSS median first 10% after 60 s {mib(r0)}, last 10% {mib(r1)}, peak {mib(rpeak)}, "
      f"30 s after the load {mib(int(sys.argv[2]))}")
print(f"data dir median first 10% {mib(d0)}, last 10% {mib(d1)}, peak {mib(dpeak)}; files peak {fpeak}")
failed = []
if r1 > r0 * rss_growth:
    failed.append(f"RSS grew {r1 / r0:.2f}x (bound {rss_growth}x)")
if d1 > d0 * dir_growth:
    failed.append(f"data dir grew {d1 / d0:.2f}x (bound {dir_growth}x)")
if fpeak > max_files:
    failed.append(f"{fpeak} files in the data dir (bound {max_files})")
print("FAILED: " + "; ".join(failed) if failed else "ok: within the bounds")
sys.exit(1 if failed else 0)
PY
echo "INFO persistence:"
"$bin/cryptomem" info --credentials "$dir/data/credentials.toml" 2>/dev/null | grep -E 'snapshots_taken|used_memory|keys' || true
exit "$verdict"
