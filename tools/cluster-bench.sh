#!/usr/bin/env bash
# One server against a sharded cluster, same bench, alternating rounds.
#
#   three:    1 server vs 3 servers on this machine (they share its cores:
#             a report, not a scaling figure)
#   overhead: 1 server reached directly, through a cluster file of just it
#             (cluster1: the sharded client's wrapper), and through one naming
#             it three times (cluster3: placement and pipelines split in three;
#             the same -c tasks, so three times the connections)
# Both print ops/s and client and server CPU per request (/usr/bin/time, /proc).
#
# Usage: tools/cluster-bench.sh [three|overhead]   (default: both)
#   ROUNDS=3 REQUESTS=200000 CLIENTS=48
# Needs a release build: cargo build --release --workspace
set -euo pipefail
B=${B:-$(cd "$(dirname "$0")/.." && pwd)/target/release}
ROUNDS=${ROUNDS:-3}; REQUESTS=${REQUESTS:-200000}; CLIENTS=${CLIENTS:-48}
W=$(mktemp -d); pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$W"' EXIT
ticks=$(getconf CLK_TCK)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
for n in a b c; do
  "$B/cryptomem" serve --listen "127.0.0.1:$(free_port)" --data "$W/$n" --log warn >/dev/null 2>&1 &
  pids+=($!)
done
for n in a b c; do for _ in $(seq 100); do [ -f "$W/$n/credentials.toml" ] && break; sleep 0.1; done; done
cluster() { # cluster file name, then "name:dir" entries
  local file=$W/$1; shift
  printf 'format = "cryptomem-cluster"\nversion = 1\n' >"$file"
  for e in "$@"; do printf '[[server]]\nname = "%s"\ncredentials = "%s/credentials.toml"\n' "${e%%:*}" "${e##*:}" >>"$file"; done
}
cluster three.toml a:a b:b c:c
cluster same.toml x:a y:a z:a
cluster solo.toml x:a
server_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $t; }

# Prints "ops/s client_us server_us" for one bench run; $1: the server pids to count.
measure() {
  local count=$1; shift
  local s0 s1 out
  s0=$(server_ticks $count)
  out=$( { /usr/bin/time -f "cpu %U %S" "$B/cryptomem-tool" bench "$@" -n "$REQUESTS" -t set; } 2>&1 )
  s1=$(server_ticks $count)
  echo "$out" | awk -v s=$((s1 - s0)) -v n="$REQUESTS" -v hz="$ticks" \
    '/^SET/{ops=$2} /^cpu/{c=($2+$3)*1e6/n} END{printf "%d %.2f %.2f\n", ops, c, s*1e6/hz/n}'
}

results=$W/results
for round in $(seq "$ROUNDS"); do
  for P in 1 16; do
    if [ "${1:-both}" != overhead ]; then
      echo "three P$P one $(measure "${pids[0]}" --credentials "$W/a/credentials.toml" -c "$CLIENTS" -P $P)" | tee -a "$results"
      echo "three P$P cluster $(measure "${pids[*]}" --cluster "$W/three.toml" -c "$CLIENTS" -P $P)" | tee -a "$results"
    fi
    if [ "${1:-both}" != three ]; then
      echo "overhead P$P one $(measure "${pids[0]}" --credentials "$W/a/credentials.toml" -c "$CLIENTS" -P $P)" | tee -a "$results"
      echo "overhead P$P cluster1 $(measure "${pids[0]}" --cluster "$W/solo.toml" -c "$CLIENTS" -P $P)" | tee -a "$results"
      echo "overhead P$P cluster3 $(measure "${pids[0]}" --cluster "$W/same.toml" -c "$CLIENTS" -P $P)" | tee -a "$results"
    fi
  done
done
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
print("suite     P    side      ops/s  client us/req  server us/req  (medians)")
for key in sorted({tuple(r[:3]) for r in rows}):
    sel = [r for r in rows if tuple(r[:3]) == key]
    med = lambda i: statistics.median(float(r[i]) for r in sel)
    print(f"{key[0]:<9} {key[1]:<4} {key[2]:<8} {med(3):>7.0f}  {med(4):>13.2f}  {med(5):>13.2f}")
PY
