#!/usr/bin/env bash
# Side by side on one machine: Redis over TLS with AOF vs cryptomem (values
# sealed by the client, as real users do). Every server listens on 127.0.0.1
# with a fresh data dir and is stopped at the end.
#
# Usage: tools/compare-redis.sh            (defaults below, override by env)
#   SUITES="load always memory restart snapshot"
#   ROUNDS=3 CLIENTS=50 REQUESTS=300000 SIZE=100 KEYSPACE=100000
#   PIPELINES="1 16" TESTS="set get" FSYNC=everysec KEYS=1000000
#   SIZES="100 1024 4096 16384 65536 1048576" SIZES_BYTES=2147483648
#   CONNECTIONS="1 50 1000 5000" IDLE_CONNECTIONS=1000 LATENCY=batch
#   SETTLE=5 (seconds both servers settle before the memory and restart suites read RSS again)
#
# LATENCY=first times cryptomem's pipelined batches to their first reply, as
# redis-benchmark does (it stops the clock at the first read event of a
# batch's replies); the default, batch, times them to the last reply.
#
# Every load, sizes and connections cell also reports server CPU per request:
# utime+stime of the server process (all its threads) plus cutime+cstime (the
# children it reaped: Redis's AOF rewrites) from /proc/PID/stat before and
# after the benchmark, divided by the requests it served.
#
# Suites:
#   load      redis-benchmark and cryptomem-tool bench alternately, ROUNDS rounds,
#             medians of ops/s and p99 per test and pipeline depth, fsync FSYNC
#   always    the same for SET with appendfsync always / --fsync always
#   memory    RSS after KEYS keys of SIZE-byte values (Redis via redis-cli --pipe,
#             cryptomem via bench -t fill), per key, sealing overhead apart:
#             right after the fills and again SETTLE seconds later (5), once
#             both allocators have given back what the fill's transients held
#   restart   SAVE, SIGKILL, start again: time until each answers, from its
#             RDB / snapshot, with KEYS keys, and RSS per key SETTLE s later
#   snapshot  cryptomem p99 and RSS under SET load with KEYS keys, without and
#             with the server snapshotting whenever anything changed
#   sizes     (not in the default SUITES: about 15 minutes) the load suite per
#             value size in SIZES, fresh servers per size; each cell moves
#             about SIZES_BYTES of values (at least 2,000 and at most REQUESTS
#             requests) over a keyspace of at most 256 MiB of values
#   connections (not in the default SUITES: about 15 minutes) the load suite
#             with each connection count in CONNECTIONS (the open-file limit
#             is raised to its hard limit; counts it cannot hold are skipped
#             and said so), then RSS per idle authenticated connection with
#             IDLE_CONNECTIONS connections (Redis: TLS connections that sent
#             one PING; cryptomem: handshake, AUTH, one PING);
#             IDLE_CONNECTIONS=0 leaves that part out
#   eviction  (not in the default SUITES: about 10 minutes) the same cache-aside
#             trace (GET, SET on a miss; cryptomem-tool replay) against both
#             under one memory limit: EVICT_TRACES (zipf scan shift) over KEYS
#             keys, EVICT_REQUESTS GETs each, limits EVICT_LIMITS percent of
#             the working set (what KEYS keys of SIZE bytes take in Redis);
#             Redis allkeys-lru/lfu, cryptomem allkeys-lru/lfu/tinylfu. Redis
#             is reached over plain TCP here (hit ratio is the point).
set -euo pipefail

SUITES=${SUITES:-"load always memory restart snapshot"}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-50}
REQUESTS=${REQUESTS:-300000}
SIZE=${SIZE:-100}
KEYSPACE=${KEYSPACE:-100000}
PIPELINES=${PIPELINES:-"1 16"}
TESTS=${TESTS:-"set get"}
FSYNC=${FSYNC:-everysec}
SETTLE=${SETTLE:-5}
KEYS=${KEYS:-1000000}
EVICT_TRACES=${EVICT_TRACES:-"zipf scan shift"}
EVICT_REQUESTS=${EVICT_REQUESTS:-2000000}
EVICT_LIMITS=${EVICT_LIMITS:-"10 1"}
SIZES=${SIZES:-"100 1024 4096 16384 65536 1048576"}
SIZES_BYTES=${SIZES_BYTES:-2147483648}
CONNECTIONS=${CONNECTIONS:-"1 50 1000 5000"}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-1000}
LATENCY=${LATENCY:-batch}

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
redis_pid=""
cm_pid=""
cleanup() {
  for p in $redis_pid $cm_pid; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
now() { date +%s.%N; }
rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }
clk_tck=$(getconf CLK_TCK)
# cpu_us PID: user + system CPU of every thread of PID so far, and of the
# children it has reaped (Redis rewrites its AOF in a forked child), in
# microseconds. (Fields counted after the ")" that ends the command name.)
cpu_us() { sed 's/^.*) //' "/proc/$1/stat" | awk -v hz="$clk_tck" '{printf "%.0f\n", ($12 + $13 + $14 + $15) * 1000000 / hz}'; }
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/key.pem" -out "$work/cert.pem" -days 1 -subj /CN=127.0.0.1 >/dev/null 2>&1

rcli() { redis-cli --tls --insecure -p "$rport" "$@"; }

# start_redis FSYNC [extra args...]: a fresh (or, with KEEP=1, the same) dir.
start_redis() {
  local fsync=$1; shift
  [ "${KEEP:-0}" = 1 ] || { rm -rf "$work/redis"; mkdir -p "$work/redis"; }
  rport=$(free_port)
  rplain=$(free_port)
  redis_started=$(now)
  redis-server --port "$rplain" --bind 127.0.0.1 --tls-port "$rport" --tls-cert-file "$work/cert.pem" \
    --tls-key-file "$work/key.pem" --tls-ca-cert-file "$work/cert.pem" --tls-auth-clients no \
    --appendonly yes --appendfsync "$fsync" --save "" --dir "$work/redis" --daemonize no \
    --loglevel warning "$@" >>"$work/redis.log" 2>&1 &
  redis_pid=$!
  for _ in $(seq 1 3000); do
    [ "$(rcli ping 2>/dev/null)" = PONG ] && { redis_ready=$(now); return; }
    sleep 0.01
  done
  cat "$work/redis.log" >&2; exit 1
}

# start_cm FSYNC [extra args...]: a fresh (or, with KEEP=1, the same) data dir.
start_cm() {
  local fsync=$1; shift
  [ "${KEEP:-0}" = 1 ] || rm -rf "$work/cm"
  cport=$(free_port)
  cm_started=$(now)
  "$cm" serve --data "$work/cm" --listen "127.0.0.1:$cport" --fsync "$fsync" --log warn "$@" \
    >>"$work/cm.out" 2>>"$work/cm.log" &
  cm_pid=$!
  for _ in $(seq 1 3000); do
    if [ -f "$work/cm/credentials.toml" ] &&
      "$cm" ping --credentials "$work/cm/credentials.toml" --server "127.0.0.1:$cport" >/dev/null 2>&1; then
      cm_ready=$(now); return
    fi
    sleep 0.01
  done
  cat "$work/cm.log" >&2; exit 1
}

stop_all() {
  for p in $redis_pid $cm_pid; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  redis_pid=""; cm_pid=""
}

cmbench() { "$tool" bench --credentials "$work/cm/credentials.toml" --server "127.0.0.1:$cport" "$@"; }

# run_rounds LABEL TESTS: alternate both benchmarks; append to $results one
# line per run: server, label, pipeline, ops/s, p99 ms, server CPU us/request.
# The cell's shape is CLIENTS, REQUESTS, SIZE and KEYSPACE as set when called.
run_rounds() {
  local label=$1 tests=$2 before
  for round in $(seq 1 "$ROUNDS"); do
    for p in $PIPELINES; do
      for t in $tests; do
        echo "$label round $round: $t -P $p" >&2
        before=$(cpu_us "$redis_pid")
        redis-benchmark --tls --insecure -p "$rport" -c "$CLIENTS" -n "$REQUESTS" -P "$p" -d "$SIZE" -r "$KEYSPACE" -t "$t" --csv \
          >"$work/bench.csv" 2>/dev/null
        python3 -c 'import csv,sys
rows=list(csv.reader(open(sys.argv[1])))
h=rows[0]; r=rows[1]
label, p, cpu, n = sys.argv[2:]
print("redis\t%s\t%s\t%s\t%s\t%.3f" % (label, p, r[h.index("rps")], r[h.index("p99_latency_ms")], int(cpu) / int(n)))' "$work/bench.csv" "$label:$t" "$p" "$(( $(cpu_us "$redis_pid") - before ))" "$REQUESTS" >>"$results"
        before=$(cpu_us "$cm_pid")
        cmbench -c "$CLIENTS" -n "$REQUESTS" -P "$p" -d "$SIZE" -r "$KEYSPACE" -t "$t" --latency "$LATENCY" --json >"$work/bench.json"
        python3 -c 'import json,sys
o=json.load(open(sys.argv[1]))[0]
label, p, cpu = sys.argv[2:]
print("cryptomem\t%s\t%s\t%s\t%s\t%.3f" % (label, p, o["ops_per_sec"], o["p99_ms"], int(cpu) / max(o["requests"], 1)))' "$work/bench.json" "$label:$t" "$p" "$(( $(cpu_us "$cm_pid") - before ))" >>"$results"
      done
    done
  done
}

# redis_fill PREFIX: KEYS keys PREFIX0.. of SIZE bytes into Redis.
redis_fill() {
  python3 -c '
import sys
prefix, n, size = sys.argv[1].encode(), int(sys.argv[2]), int(sys.argv[3])
v = b"x" * size
out = sys.stdout.buffer
for i in range(n):
    k = b"%s%d" % (prefix, i)
    out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, size, v))
' "$1" "$KEYS" "$SIZE" | rcli --pipe >/dev/null
}

# fill_both: KEYS keys bench:key:0.. of SIZE bytes in both servers.
fill_both() {
  redis_fill bench:key:
  cmbench -c "$CLIENTS" -P 16 -d "$SIZE" -r "$KEYS" -t fill >/dev/null
}

report=$work/report.txt
: >"$report"
results=$work/results.tsv
: >"$results"

for suite in $SUITES; do
  case $suite in
  load)
    start_redis "$FSYNC"; start_cm "$FSYNC"
    run_rounds "$FSYNC" "$TESTS"
    stop_all ;;
  always)
    start_redis always; start_cm always
    run_rounds always set
    stop_all ;;
  memory)
    start_redis "$FSYNC"; start_cm "$FSYNC"
    r0=$(rss_kb "$redis_pid"); c0=$(rss_kb "$cm_pid")
    echo "memory: filling $KEYS keys into each ..." >&2
    fill_both
    r1=$(rss_kb "$redis_pid"); c1=$(rss_kb "$cm_pid")
    rused=$(rcli info memory | awk -F: '/^used_memory_rss:/{print $2}' | tr -d '\r')
    sleep "$SETTLE"
    r2=$(rss_kb "$redis_pid"); c2=$(rss_kb "$cm_pid")
    python3 - "$KEYS" "$SIZE" "$r0" "$r1" "$c0" "$c1" "$rused" "$r2" "$c2" "$SETTLE" >>"$report" <<'PY'
import sys
keys, size, r0, r1, c0, c1, rused, r2, c2, settle = map(int, sys.argv[1:])
sealed = 33
print(f"\nmemory: {keys} keys of {size}-byte values (cryptomem stores {size + sealed}-byte sealed values)")
print(f"{'':<10} {'RSS empty':>10} {'RSS full':>10} {'bytes/key':>10} {'growth/key':>11} {f'{settle} s later':>12}")
print(f"{'redis':<10} {r0/1024:>8.1f}MB {r1/1024:>8.1f}MB {r1*1024/keys:>10.0f} {(r1-r0)*1024/keys:>11.0f} {r2*1024/keys:>12.0f}   (used_memory_rss {rused/keys:.0f} B/key)")
print(f"{'cryptomem':<10} {c0/1024:>8.1f}MB {c1/1024:>8.1f}MB {c1*1024/keys:>10.0f} {(c1-c0)*1024/keys:>11.0f} {c2*1024/keys:>12.0f}")
print(f"cryptomem without the {sealed}-byte sealing overhead: {c1*1024/keys - sealed:.0f} B/key; ratio to Redis {(c1*1024/keys - sealed)/(r1*1024/keys):.2f}")
print(f"ratio to Redis with the seal: {c1/r1:.3f} right after the fills, {c2/r2:.3f} {settle} s later")
PY
    if [[ " $SUITES " == *" restart "* ]]; then
      echo "restart: saving and killing both ..." >&2
      rcli config set dbfilename dump.rdb >/dev/null
      rcli save >/dev/null
      "$cm" save --credentials "$work/cm/credentials.toml" --server "127.0.0.1:$cport" >/dev/null
      stop_all
      KEEP=1 start_redis "$FSYNC" --appendonly no --dbfilename dump.rdb
      KEEP=1 start_cm "$FSYNC"
      rkeys=$(rcli dbsize); ckeys=$("$cm" dbsize --raw --credentials "$work/cm/credentials.toml" --server "127.0.0.1:$cport")
      sleep "$SETTLE"
      r3=$(rss_kb "$redis_pid"); c3=$(rss_kb "$cm_pid")
      python3 - "$redis_started" "$redis_ready" "$cm_started" "$cm_ready" "$rkeys" "$ckeys" "$r3" "$c3" "$KEYS" "$SETTLE" >>"$report" <<'PY'
import sys
rs, rr, cs, cr = map(float, sys.argv[1:5])
r3, c3, keys, settle = map(int, sys.argv[7:11])
print(f"\nrestart: start to first reply after SAVE + SIGKILL")
print(f"redis     {rr - rs:6.2f} s from its RDB ({sys.argv[5]} keys); RSS {settle} s later {r3*1024/keys:.0f} B/key")
print(f"cryptomem {cr - cs:6.2f} s from its snapshot ({sys.argv[6]} keys); ratio {(cr - cs) / (rr - rs):.2f}; RSS {settle} s later {c3*1024/keys:.0f} B/key (ratio {c3/r3:.3f})")
PY
      stop_all
    fi ;;
  restart) [[ " $SUITES " == *" memory "* ]] || echo "restart runs as part of the memory suite; add memory to SUITES" >&2 ;;
  snapshot)
    start_cm "$FSYNC"
    cmbench -c "$CLIENTS" -P 16 -d "$SIZE" -r "$KEYS" -t fill >/dev/null
    # Let the fill's own log-size snapshot finish first.
    "$cm" save --credentials "$work/cm/credentials.toml" --server "127.0.0.1:$cport" >/dev/null
    base=$(cmbench -c "$CLIENTS" -P 1 -d "$SIZE" -r "$KEYS" -t set -n 100000000 --duration 10s --json)
    stop_all
    # The same data, now snapshotting whenever anything changed (checked every
    # 500 ms): snapshots run most of the time, started by the server itself.
    KEEP=1 start_cm "$FSYNC" --snapshot-after-writes 1
    rss_before=$(rss_kb "$cm_pid")
    ( peak=0; end=$(( $(date +%s) + 10 ))
      while [ "$(date +%s)" -lt "$end" ]; do r=$(rss_kb "$cm_pid"); [ "$r" -gt "$peak" ] && peak=$r; sleep 0.05; done
      echo "$peak" >"$work/peak" ) &
    sampler=$!
    during=$(cmbench -c "$CLIENTS" -P 1 -d "$SIZE" -r "$KEYS" -t set -n 100000000 --duration 10s --json)
    wait "$sampler"
    info=$("$cm" info --credentials "$work/cm/credentials.toml" --server "127.0.0.1:$cport")
    snaps=$(echo "$info" | awk -F: '/^snapshots_taken:/{print $2}' | tr -d '\r')
    snap_ms=$(echo "$info" | awk -F: '/^last_snapshot_duration_ms:/{print $2}' | tr -d '\r')
    stop_all
    python3 - "$base" "$during" "$rss_before" "$(cat "$work/peak")" "$snaps" "$snap_ms" >>"$report" <<'PY'
import json, sys
b, d = json.loads(sys.argv[1])[0], json.loads(sys.argv[2])[0]
before, peak, snaps, ms = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
print(f"\nsnapshot under load (cryptomem, SET -P 1, 10 s each; during the second the server snapshots whenever anything changed)")
print(f"without snapshots:  {b['ops_per_sec']:>9.0f} ops/s  p99 {b['p99_ms']:.2f} ms")
print(f"with snapshots:     {d['ops_per_sec']:>9.0f} ops/s  p99 {d['p99_ms']:.2f} ms  (p99 ratio {d['p99_ms'] / b['p99_ms']:.2f}; {snaps} snapshots of {ms} ms, {snaps * ms / 100:.0f}% of the time)")
print(f"RSS {before/1024:.0f} MB before, peak {peak/1024:.0f} MB during (+{(peak - before) * 100 / before:.1f}%)")
PY
    ;;
  sizes)
    for size in $SIZES; do
      start_redis "$FSYNC"; start_cm "$FSYNC"
      n=$(( SIZES_BYTES / size )); [ "$n" -gt "$REQUESTS" ] && n=$REQUESTS; [ "$n" -lt 2000 ] && n=2000
      k=$(( 268435456 / size )); [ "$k" -gt "$KEYSPACE" ] && k=$KEYSPACE
      SIZE=$size REQUESTS=$n KEYSPACE=$k run_rounds "${size}B" "$TESTS"
      stop_all
    done ;;
  connections)
    hard=$(ulimit -Hn)
    [ "$(ulimit -n)" -lt "$hard" ] && ulimit -n "$hard" && echo "connections: raised the open-file limit to its hard limit, $hard" >&2
    for c in $CONNECTIONS; do
      # Each connection is a socket in the client and one in the server, plus slack.
      if [ $(( c + 200 )) -gt "$(ulimit -n)" ]; then
        echo "connections: skipping $c: the open-file limit is $(ulimit -n) (raise the hard limit: ulimit -Hn, LimitNOFILE)" | tee -a "$report" >&2
        continue
      fi
      start_redis "$FSYNC" --maxclients $(( c + 100 )); start_cm "$FSYNC"
      n=$(( c * 100 )); [ "$n" -lt "$REQUESTS" ] && n=$REQUESTS
      [ "$c" -eq 1 ] && n=$(( REQUESTS / 10 ))
      CLIENTS=$c REQUESTS=$n run_rounds "c$c" "$TESTS"
      stop_all
    done
    # The idle-connection measurement; IDLE_CONNECTIONS=0 leaves it out.
    if [ "$IDLE_CONNECTIONS" -gt 0 ]; then
      start_redis "$FSYNC" --maxclients $(( IDLE_CONNECTIONS + 100 )); start_cm "$FSYNC"
      sleep 1
      r0=$(rss_kb "$redis_pid")
      python3 - "$rport" "$IDLE_CONNECTIONS" "$work/idle-ready" <<'PY' &
import socket, ssl, sys, time
port, n, ready = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
conns = []
for _ in range(n):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)))
    s.sendall(b"PING\r\n")
    assert s.recv(16).startswith(b"+PONG")
    conns.append(s)
open(ready, "w").close()
time.sleep(600)
PY
      holder=$!
      while [ ! -f "$work/idle-ready" ]; do
        kill -0 "$holder" 2>/dev/null || { echo "idle connections: the Redis holder failed" >&2; exit 1; }
        sleep 0.2
      done
      sleep 1; r1=$(rss_kb "$redis_pid"); kill "$holder"; wait "$holder" 2>/dev/null || true
      c0=$(rss_kb "$cm_pid")
      cmbench -c "$IDLE_CONNECTIONS" --idle 600s >"$work/idle-cm" &
      holder=$!
      while ! grep -q open "$work/idle-cm" 2>/dev/null; do
        kill -0 "$holder" 2>/dev/null || { echo "idle connections: cryptomem-tool bench --idle failed" >&2; exit 1; }
        sleep 0.2
      done
      sleep 1; c1=$(rss_kb "$cm_pid"); kill "$holder"; wait "$holder" 2>/dev/null || true
      stop_all
      python3 - "$IDLE_CONNECTIONS" "$r0" "$r1" "$c0" "$c1" >>"$report" <<'PY'
import sys
n, r0, r1, c0, c1 = map(int, sys.argv[1:])
print(f"\nidle connections: RSS growth with {n} idle connections open (Redis: TLS, one PING each; cryptomem: handshake, AUTH, one PING each)")
print(f"redis     {(r1 - r0) * 1024 / n:8.0f} B per connection ({r0/1024:.1f} -> {r1/1024:.1f} MB)")
print(f"cryptomem {(c1 - c0) * 1024 / n:8.0f} B per connection ({c0/1024:.1f} -> {c1/1024:.1f} MB); ratio {(c1 - c0) / max(r1 - r0, 1):.2f}")
PY
    fi
    ;;
  eviction)
    # The working set: what KEYS keys of SIZE bytes take in Redis.
    start_redis "$FSYNC"
    rbase=$(rcli info memory | awk -F: '/^used_memory:/{print $2}' | tr -d '\r')
    echo "eviction: measuring the working set ($KEYS keys) in Redis ..." >&2
    redis_fill t:
    rfull=$(rcli info memory | awk -F: '/^used_memory:/{print $2}' | tr -d '\r')
    stop_all
    ws=$((rfull - rbase))
    evict=$work/eviction.jsonl
    : >"$evict"
    for pct in $EVICT_LIMITS; do
      limit=$((ws * pct / 100))
      for trace in $EVICT_TRACES; do
        replay=("$tool" replay --trace "$trace" --keys "$KEYS" -n "$EVICT_REQUESTS" -d "$SIZE" --json)
        for policy in allkeys-lru allkeys-lfu; do
          echo "eviction: redis $policy, $trace, $pct% ($limit bytes + its empty $rbase)" >&2
          start_redis "$FSYNC" --maxmemory $((limit + rbase)) --maxmemory-policy "$policy"
          out=$("${replay[@]}" --redis "127.0.0.1:$rplain") || { echo "replay failed (for example OOM: a limit too small for the connections' buffers): $out" >&2; exit 1; }
          evicted=$(rcli info stats | awk -F: '/^evicted_keys:/{print $2}' | tr -d '\r')
          echo "{\"pct\": $pct, \"policy\": \"$policy\", \"evicted\": $evicted, \"r\": $out}" >>"$evict"
          stop_all
        done
        for policy in allkeys-lru allkeys-lfu allkeys-tinylfu; do
          echo "eviction: cryptomem $policy, $trace, $pct% ($limit bytes)" >&2
          start_cm "$FSYNC" --maxmemory "$limit" --maxmemory-policy "$policy"
          out=$("${replay[@]}" --credentials "$work/cm/credentials.toml" --server "127.0.0.1:$cport") || { echo "replay failed (for example OOM: a limit too small for the connections' buffers): $out" >&2; exit 1; }
          info=$("$cm" info --credentials "$work/cm/credentials.toml" --server "127.0.0.1:$cport")
          evicted=$(echo "$info" | awk -F: '/^evicted_keys:/{print $2}' | tr -d '\r')
          echo "{\"pct\": $pct, \"policy\": \"$policy\", \"evicted\": $evicted, \"r\": $out}" >>"$evict"
          stop_all
        done
      done
    done
    python3 - "$evict" "$KEYS" "$SIZE" "$ws" "$EVICT_REQUESTS" >>"$report" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
keys, size, ws, requests = sys.argv[2:]
print(f"\neviction: cache-aside replay, {requests} GETs over {keys} keys of {size} B; working set {int(ws)/2**20:.0f} MiB (in Redis)")
cols = [("redis", "allkeys-lru"), ("redis", "allkeys-lfu"), ("cryptomem", "allkeys-lru"), ("cryptomem", "allkeys-lfu"), ("cryptomem", "allkeys-tinylfu")]
head = "".join(f"{w[:5] + ' ' + p[8:]:>14}" for w, p in cols)
for what, fmt in (("hit ratio", "{:>14.4f}"), ("ops/s (GET+SET)", "{:>14.0f}")):
    print(f"\n{what:<16} {'limit':>6}{head}")
    for pct in dict.fromkeys(r["pct"] for r in rows):
        for trace in dict.fromkeys(r["r"]["trace"] for r in rows):
            cells = []
            for w, p in cols:
                m = [r for r in rows if r["pct"] == pct and r["r"]["trace"] == trace and r["r"]["target"] == w and r["policy"] == p]
                v = (m[0]["r"]["hit_ratio"] if what == "hit ratio" else m[0]["r"]["ops_per_sec"]) if m else float("nan")
                cells.append(fmt.format(v))
            print(f"{trace:<16} {str(pct) + '%':>6}" + "".join(cells))
PY
    ;;
  *) echo "unknown suite $suite (load, always, memory, restart, snapshot, sizes, connections, eviction)" >&2; exit 1 ;;
  esac
done

if [ -s "$results" ]; then
  python3 - "$results" "$ROUNDS" "$CLIENTS" "$SIZE" "$KEYSPACE" "$REQUESTS" <<'PY'
import os, statistics, sys
from collections import defaultdict
path, rounds, clients, size, keyspace, requests = sys.argv[1:]
rps, p99, cpu = defaultdict(list), defaultdict(list), defaultdict(list)
for line in open(path):
    who, test, pipe, r, l, c = line.rstrip("\n").split("\t")
    rps[(who, test, pipe)].append(float(r)); p99[(who, test, pipe)].append(float(l)); cpu[(who, test, pipe)].append(float(c))
cells = list(dict.fromkeys((t, p) for (_, t, p) in rps))
print(f"medians of {rounds} rounds, {os.cpu_count()} cores; unless the cell says otherwise: {clients} clients, {requests} requests, {size}-byte values, {keyspace}-key keyspace")
print(f"{'cell:test':<16} {'-P':>3} {'redis ops/s':>12} {'cryptomem ops/s':>16} {'ratio':>6}   {'redis p99':>10} {'cryptomem p99':>14}   {'redis CPU/req':>14} {'cryptomem CPU/req':>18}")
m = statistics.median
for t, p in cells:
    r, c = m(rps[("redis", t, p)]), m(rps[("cryptomem", t, p)])
    rl, cl = m(p99[("redis", t, p)]), m(p99[("cryptomem", t, p)])
    ru, cu = m(cpu[("redis", t, p)]), m(cpu[("cryptomem", t, p)])
    cell, test = t.rsplit(":", 1)
    print(f"{cell + ':' + test.upper():<16} {p:>3} {r:>12.0f} {c:>16.0f} {c / r:>6.2f}   {rl:>8.2f}ms {cl:>12.2f}ms   {ru:>12.1f}us {cu:>16.1f}us")
PY
fi
cat "$report"
