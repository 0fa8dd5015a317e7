#!/usr/bin/env bash
# make bench: rift to rift MB/s for a 500 MB file through a release keksbox, with raw TCP over
# loopback beside it as the ceiling of this machine. Runs in a network namespace of its own
# (loopback only): call it as `unshare -n rift/bench/throughput.sh KEKSBOX RIFT`.
set -euo pipefail
keksbox=$1
rift=$2
size_mb=${RIFT_BENCH_MB:-500}
ip link set lo up
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
head -c "$((size_mb * 1000 * 1000))" /dev/urandom > "$work/payload.bin"

# The ceiling: one TCP connection over loopback, Python on both ends, same bytes.
tcp=$(python3 - "$work/payload.bin" <<'PY'
import socket, sys, threading, time
path = sys.argv[1]
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
port = srv.getsockname()[1]
def send():
    c = socket.create_connection(("127.0.0.1", port))
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            c.sendall(chunk)
    c.close()
t = threading.Thread(target=send); start = time.monotonic(); t.start()
conn, _ = srv.accept(); n = 0
while data := conn.recv(1 << 20):
    n += len(data)
t.join(); secs = time.monotonic() - start
print(f"{n / secs / 1e6:.0f}")
PY
)

"$keksbox" --bind 127.0.0.1:8443 --state-dir "$work/state" 2>"$work/keksbox.log" &
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/8443) 2>/dev/null && break; sleep 0.05; done
export KEKSBOX_SERVER=https://127.0.0.1:8443 KEKSBOX_KNOWN_SERVERS=$work/known RIFT_ICE_BIND=127.0.0.1 RIFT_SECRET=bench-room RUST_LOG=error
# Trust the box first, so the timed run measures the transfer, not the first-use prompt.
(cd "$work" && "$rift" send payload.bin >/dev/null 2>"$work/send.err") &
sender=$!
start=$(date +%s.%N)
"$rift" receive "$work/out" 2>"$work/recv.err" >/dev/null
end=$(date +%s.%N)
wait "$sender" || true
cmp -s "$work/payload.bin" "$work/out/payload.bin" || { echo "rift bench: the received file differs"; tail -5 "$work/recv.err"; exit 1; }
rift_mbs=$(python3 -c "print(f'{$size_mb / ($end - $start):.1f}')")
echo "rift to rift, ${size_mb} MB over loopback (join, connect and transfer): ${rift_mbs} MB/s"
echo "raw TCP over loopback, same bytes (the ceiling here): ${tcp} MB/s"
