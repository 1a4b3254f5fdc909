#!/bin/bash
# Full-disk check on a real filesystem (needs root: it mounts a 2 MiB tmpfs
# at /tmp/full). Writes 3 KB values with the CLI until the server refuses
# them, then either stops it (SIGTERM), or with GROW=1 gives the tmpfs room,
# checks that writes are accepted again and SIGKILLs it. Finally restarts on a
# larger tmpfs and checks that every acknowledged key is there.
#
# Usage: cargo build --release && tools/full-disk.sh everysec|always|no
#        GROW=1 tools/full-disk.sh everysec
# Uses (and creates if missing) the value key /tmp/vk.key.

set -u
P=$1; B=$(cd "$(dirname "$0")/.." && pwd)/target/release/cryptomem
[ -f /tmp/vk.key ] || $B keygen --out /tmp/vk.key >/dev/null
umount /tmp/full 2>/dev/null; mkdir -p /tmp/full; mount -t tmpfs -o size=2m tmpfs /tmp/full
D=/tmp/full/data
$B serve --listen 127.0.0.1:0 --data $D --fsync $P --log info > /tmp/full-$P.out 2> /tmp/full-$P.err &
S=$!
for i in $(seq 100); do [ -f $D/credentials.toml ] && break; sleep 0.1; done
export CRYPTOMEM_CREDENTIALS=$D/credentials.toml CRYPTOMEM_VALUE_KEY_FILE=/tmp/vk.key
V=$(head -c 3000 /dev/zero | tr '\0' x)
acked=0; refused=0; first_refusal=""
for i in $(seq 1 1500); do
  out=$($B set k$i "$V" 2>&1)
  if [ "$out" = "OK" ]; then acked=$((acked+1)); echo $i >> /tmp/full-$P.acked
  else refused=$((refused+1)); [ -z "$first_refusal" ] && first_refusal="$i: $out"; fi
  [ $refused -ge 20 ] && break
  kill -0 $S 2>/dev/null || { echo "server exited after write $i"; break; }
done
echo "policy $P: acked $acked, refused $refused; first refusal: $first_refusal"
echo "GET of last acked while full: $($B get k$(tail -1 /tmp/full-$P.acked) --raw 2>&1 | head -c 10)"
if [ "${GROW:-}" = 1 ] && kill -0 $S 2>/dev/null; then
  mount -o remount,size=64m /tmp/full; ok=""
  for t in $(seq 1 40); do sleep 0.25; o=$($B set after "$V" 2>&1); [ "$o" = OK ] && { ok="accepted after $t tries"; break; }; done
  echo "space returned: write ${ok:-still refused}"; echo after >> /tmp/full-$P.acked
  kill -KILL $S; echo "SIGKILL"
fi
kill -0 $S 2>/dev/null && { kill -TERM $S; wait $S; echo "server SIGTERM exit $?"; } || { wait $S; echo "server had exited with $?"; }
grep -E "WARN|ERROR" /tmp/full-$P.err | cut -c1-250 | head -8
echo "warn/error lines: $(grep -cE 'WARN|ERROR' /tmp/full-$P.err)"
# grow the fs so it has room, restart, check every acked key
mount -o remount,size=64m /tmp/full
$B serve --listen 127.0.0.1:0 --data $D --fsync $P > /dev/null 2>/tmp/full-$P.err2 &
S=$!; sleep 1.5
# credentials hold the old port: override with the new one
port=$(grep -o 'addr=127.0.0.1:[0-9]*' /tmp/full-$P.err2 | cut -d: -f2)
missing=0
for i in $(cat /tmp/full-$P.acked); do
  case $i in after) k=after;; *) k=k$i;; esac
  got=$($B get $k --raw --server 127.0.0.1:$port 2>&1 | cut -c1-5); [ "$got" = "xxxxx" ] || { missing=$((missing+1)); echo "k$i: $got"; }
done
extra=$($B dbsize --server 127.0.0.1:$port)
echo "after restart: acked keys missing $missing of $(wc -l < /tmp/full-$P.acked); dbsize $extra"
kill -TERM $S; wait $S
rm -f /tmp/full-$P.acked
umount /tmp/full
