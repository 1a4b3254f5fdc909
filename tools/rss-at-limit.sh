#!/usr/bin/env bash
# Resident memory of a server held at its memory limit: starts one server on
# 127.0.0.1 (a free port, a fresh data dir) with --maxmemory LIMIT and
# POLICY, writes KEYS keys of SIZE-byte values twice (`cryptomem-tool bench
# -t fill -P 16`, 50 connections), so every SET of the second pass evicts,
# then prints the key count, used_memory, the empty server's RSS, RSS 2 s
# after the load and its peak (sampled every 100 ms). Snapshots run on
# their default triggers, as on a real server. Stops the server at the end.
#
# Usage: tools/rss-at-limit.sh [LIMIT] [KEYS]     (defaults 64MiB 2100000)
#   POLICY=allkeys-lru SIZE=100 ROOT=. (a checkout with release binaries)
#   EXTRA_ARGS="" (more serve flags)
# The README's rows: tools/rss-at-limit.sh 64MiB 2100000 and
# tools/rss-at-limit.sh 512MiB 16800000 (about 4 minutes).
set -euo pipefail
LIMIT=${1:-64MiB}; KEYS=${2:-2100000}
POLICY=${POLICY:-allkeys-lru}; SIZE=${SIZE:-100}; ROOT=${ROOT:-.}; EXTRA_ARGS=${EXTRA_ARGS:-}
bin=$ROOT/target/release
[ -x "$bin/cryptomem" ] && [ -x "$bin/cryptomem-tool" ] || { echo "build first: cargo build --release --workspace" >&2; exit 2; }
work=$(mktemp -d /tmp/rss-at-limit.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# shellcheck disable=SC2086
"$bin/cryptomem" serve --data "$work/data" --listen "127.0.0.1:$port" --log warn \
  --maxmemory "$LIMIT" --maxmemory-policy "$POLICY" $EXTRA_ARGS >"$work/out" 2>"$work/err" &
pid=$!
trap 'kill -9 $pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
creds=(--credentials "$work/data/credentials.toml" --server "127.0.0.1:$port")
for _ in $(seq 600); do
  [ -f "$work/data/credentials.toml" ] && "$bin/cryptomem" ping "${creds[@]}" >/dev/null 2>&1 && break
  sleep 0.05
done
rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$pid/status"; }
empty=$(rss_kb)
( peak=0
  while [ ! -f "$work/stop" ] && kill -0 "$pid" 2>/dev/null; do
    r=$(rss_kb); [ "${r:-0}" -gt "$peak" ] && peak=$r; echo "$peak" >"$work/peak"; sleep 0.1
  done ) &
for _ in 1 2; do
  "$bin/cryptomem-tool" bench "${creds[@]}" -c 50 -P 16 -d "$SIZE" -r "$KEYS" -t fill >/dev/null
done
sleep 2
touch "$work/stop"; wait "$!" 2>/dev/null || true
info=$("$bin/cryptomem" info "${creds[@]}")
field() { echo "$info" | awk -F: -v k="$1" '$1 == k {print $2}' | tr -d '\r'; }
used=$(field used_memory)
python3 - "$LIMIT" "$(field keys)" "$used" "$empty" "$(rss_kb)" "$(cat "$work/peak")" <<'PY'
import sys
limit, keys = sys.argv[1], int(sys.argv[2])
used, empty, rss, peak = int(sys.argv[3]), *(int(x) * 1024 for x in sys.argv[4:7])
mib = 1 << 20
print(f"limit {limit}: {keys} keys, used_memory {used / mib:.1f} MiB, "
      f"RSS {rss / mib:.1f} MiB (peak {peak / mib:.1f}) over an empty server's {empty / mib:.1f} MiB: "
      f"{(rss - empty) / used:.2f} x used_memory")
PY
