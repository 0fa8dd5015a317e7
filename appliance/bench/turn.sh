#!/usr/bin/env bash
# make bench: TURN throughput. rift in namespace A sends a file to rift in namespace B; A and
# B are joined by veth pairs to a "box" namespace only, where keksbox runs. Without
# forwarding in box the file goes through the box's TURN relay; with forwarding it goes
# direct (routed by the box's kernel), measured beside it. Prints MB/s for both and keksbox's
# CPU time per relayed MB (utime + stime from /proc/<pid>/stat). The per-allocation bandwidth
# cap is lifted here so the relay itself is measured, not the cap.
# Usage (root): appliance/bench/turn.sh KEKSBOX RIFT   (TURN_BENCH_MB sets the size, default 100)
set -euo pipefail
keksbox=$(realpath "$1")
rift=$(realpath "$2")
size_mb=${TURN_BENCH_MB:-100}
id=$$
A=kbb-a-$id BOX=kbb-box-$id B=kbb-b-$id
work=$(mktemp -d)
cleanup() {
  kill $(jobs -p) 2>/dev/null || true; [ -n "${TURN_BENCH_LOG:-}" ] && sleep 1 && cp "$work/keksbox.log" "$TURN_BENCH_LOG" || true
  for ns in $A $BOX $B; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
head -c "$((size_mb * 1000 * 1000))" /dev/urandom > "$work/payload.bin"

for ns in $A $BOX $B; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n $A link add a0 type veth peer name a1 netns $BOX
ip -n $B link add b0 type veth peer name b1 netns $BOX
ip -n $A addr add 10.92.1.2/24 dev a0; ip -n $A link set a0 up
ip -n $B addr add 10.92.2.2/24 dev b0; ip -n $B link set b0 up
ip -n $BOX addr add 10.92.1.1/24 dev a1; ip -n $BOX link set a1 up
ip -n $BOX addr add 10.92.2.1/24 dev b1; ip -n $BOX link set b1 up
ip -n $A route add default via 10.92.1.1
ip -n $B route add default via 10.92.2.1

printf '[mdns]\nenabled = false\n[turn]\nallocation_bytes_per_sec = 1073741824\n' > "$work/keksbox.toml"
RUST_LOG=${KEKSBOX_LOG:-info} ip netns exec $BOX "$keksbox" --no-tls --bind 0.0.0.0:8080 --config "$work/keksbox.toml" \
  --state-dir "$work/state" 2>"$work/keksbox.log" &
for _ in $(seq 100); do
  ip netns exec $A curl -sf -o /dev/null http://10.92.1.1:8080/version && break
  sleep 0.05
done
box_pid=$(ip netns pids $BOX | head -1)
ticks() { awk '{print $14 + $15}' "/proc/$box_pid/stat"; }
hz=$(getconf CLK_TCK)

# One run: forwarding 0 (through TURN) or 1 (direct). Prints "MB/s cpu_seconds".
run() {
  ip netns exec $BOX sh -c "echo $1 > /proc/sys/net/ipv4/ip_forward"
  rm -rf "$work/out"; mkdir -p "$work/out"
  local secret="turn-bench-$1-$id"
  (cd "$work" && KEKSBOX_SERVER=http://10.92.1.1:8080 KEKSBOX_KNOWN_SERVERS=$work/known-a RIFT_SECRET=$secret \
    RUST_LOG=error ip netns exec $A "$rift" send payload.bin >/dev/null 2>"$work/send.err") &
  local sender=$! t0 c0 t1 c1
  c0=$(ticks); t0=$(date +%s.%N)
  (cd "$work/out" && KEKSBOX_SERVER=http://10.92.2.1:8080 KEKSBOX_KNOWN_SERVERS=$work/known-b RIFT_SECRET=$secret \
    RUST_LOG=error ip netns exec $B "$rift" receive >/dev/null 2>"$work/recv.err")
  t1=$(date +%s.%N); c1=$(ticks)
  wait "$sender" || true
  cmp -s "$work/payload.bin" "$work/out/payload.bin" || { echo "turn bench: the received file differs"; tail -5 "$work/recv.err"; exit 1; }
  python3 -c "print(f'{$size_mb / ($t1 - $t0):.1f} {($c1 - $c0) / $hz:.2f}')"
}
# UDP datagrams dropped at full receive buffers in namespace $1 (RcvbufErrors, its own count).
drops() { ip netns exec "$1" awk '/^Udp:/ { if (!n) { for (i = 1; i <= NF; i++) if ($i == "RcvbufErrors") n = i } else print $n }' /proc/net/snmp; }
read -r relay_mbs relay_cpu < <(run 0)
box_drops=$(drops $BOX) b_drops=$(drops $B)
read -r direct_mbs direct_cpu < <(run 1)
per_mb=$(python3 -c "print(f'{$relay_cpu * 1000 / $size_mb:.1f}')")
echo "TURN: rift A to B through the box (client isolation), ${size_mb} MB: ${relay_mbs} MB/s; keksbox CPU ${relay_cpu} s, ${per_mb} ms per relayed MB; datagrams dropped at full receive buffers: box ${box_drops}, receiver ${b_drops}"
echo "TURN: the same with forwarding on (direct, the box only routes): ${direct_mbs} MB/s; keksbox CPU ${direct_cpu} s"
