#!/usr/bin/env bash
# Platform checks that are not cargo tests (run by `make test-platform` and `make bench`):
#
#   platform.sh systemd                    unit files: hardening exposure <= 1.5, verify, sysusers
#   platform.sh smoke BIN [EMULATOR]       a release binary: static, serves /version and / over TLS
#   platform.sh install BIN                `make install` into a temporary DESTDIR, then verify
#   platform.sh figures BIN...             binary sizes and idle RSS (for make bench)
#
# Every server started here listens on 127.0.0.1 only and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

# systemd-analyze's threshold is on its 0-100 scale: 15 means an exposure of 1.5.
check_systemd() {
  local out
  out=$(systemd-analyze security --offline=true --threshold=15 systemd/keksbox.service 2>&1) \
    || { echo "$out" | grep -E '✗|Overall' >&2; fail "keksbox.service exposure above 1.5"; }
  echo "systemd: $(echo "$out" | grep 'Overall exposure')"
  # verify wants ExecStart= to exist: point it at the binary built for the tests.
  local bin=${KEKSBOX_BIN:-$PWD/target/debug/keksbox}
  [ -x "$bin" ] || fail "$bin missing (cargo build -p keksbox)"
  sed "s|/usr/bin/keksbox|$bin|" systemd/keksbox.service > "$TMP/keksbox.service"
  cp systemd/keksbox.socket "$TMP/"
  systemd-analyze verify "$TMP/keksbox.service" "$TMP/keksbox.socket" || fail "systemd-analyze verify"
  echo "systemd: verify ok (keksbox.service, keksbox.socket)"
  mkdir -p "$TMP/root/etc"
  systemd-sysusers --root="$TMP/root" "$PWD/systemd/keksbox.sysusers" >/dev/null 2>&1 || fail "sysusers"
  grep -q '^keksbox:' "$TMP/root/etc/passwd" || fail "sysusers made no keksbox user"
  echo "systemd: sysusers ok ($(grep '^keksbox:' "$TMP/root/etc/passwd"))"
}

# Starts BIN (under EMULATOR if given) with TLS on 127.0.0.1, ephemeral ports; sets PORT,
# HTTP_PORT, PID, LOG, STATE.
start_box() {
  local bin=$1 emulator=${2:-}
  STATE="$TMP/state-$RANDOM"
  LOG="$STATE.log"
  mkdir -p "$STATE"
  # Create the log before the server starts: the loop below reads it at once, and the
  # background job might not have opened it yet (seen on a clean clone: "can't read").
  : > "$LOG"
  cat > "$STATE.toml" <<EOF
[server]
bind = "127.0.0.1:0"
[tls]
redirect_bind = "127.0.0.1:0"
EOF
  RUST_LOG=info $emulator "$bin" --config "$STATE.toml" --state-dir "$STATE" 2> "$LOG" &
  PID=$!
  PIDS+=("$PID")
  PORT=""
  for _ in $(seq 1 300); do
    PORT=$(sed -n 's|.*serving https://127.0.0.1:\([0-9]*\)/.*|\1|p' "$LOG" | head -1)
    HTTP_PORT=$(sed -n 's|.*redirecting http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$LOG" | head -1)
    [ -n "$PORT" ] && [ -n "$HTTP_PORT" ] && return 0
    kill -0 "$PID" 2>/dev/null || { cat "$LOG" >&2; fail "$bin exited at start"; }
    sleep 0.1
  done
  cat "$LOG" >&2
  fail "$bin did not start within 30 s"
}

stop_box() {
  kill -TERM "$PID"
  local status=0
  wait "$PID" || status=$?
  [ "$status" = 0 ] || { cat "$LOG" >&2; fail "exit status $status after SIGTERM"; }
}

smoke() {
  local bin=$1 emulator=${2:-}
  [ -f "$bin" ] || fail "$bin missing"
  local kind
  kind=$(file -b "$bin")
  echo "smoke: $bin: $kind"
  case "$kind" in
    *"statically linked"*) ;;
    *) fail "$bin is not statically linked" ;;
  esac
  start_box "$bin" "$emulator"
  local cacert="$STATE/tls/cert.pem"
  # Verify against the generated certificate, by name: no -k.
  local version
  version=$(curl -sS --max-time 20 --cacert "$cacert" "https://localhost:$PORT/version") || fail "GET /version"
  [[ "$version" == keksbox\ * ]] || fail "/version said: $version"
  local page
  page=$(curl -sS --max-time 20 --cacert "$cacert" "https://localhost:$PORT/") || fail "GET /"
  grep -qi '<html' <<<"$page" || fail "/ is not a page"
  local location
  location=$(curl -sS --max-time 20 -o /dev/null -w '%{redirect_url}' "http://localhost:$HTTP_PORT/room") || fail "GET http://"
  [ "$location" = "https://localhost:$PORT/room" ] || fail "redirect went to $location"
  # TLS 1.2 and 1.3 only. SECLEVEL=0 lets this openssl offer the old versions at all, so a
  # refusal is the server's.
  local v
  for v in tls1 tls1_1 tls1_2 tls1_3; do
    local hs
    hs=$(timeout 20 openssl s_client -connect "127.0.0.1:$PORT" -"$v" -cipher 'DEFAULT@SECLEVEL=0' </dev/null 2>&1 || true)
    case "$v:$(grep -c 'Cipher is (NONE)' <<<"$hs")" in
      tls1:0 | tls1_1:0) fail "the server accepted $v" ;;
      tls1_2:1 | tls1_3:1) echo "$hs" >&2; fail "the server refused $v" ;;
    esac
  done
  local logged served
  logged=$(sed -n 's/.*certificate SHA-256 fingerprint \([0-9A-F:]*\).*/\1/p' "$LOG" | head -1)
  served=$(openssl x509 -in "$cacert" -noout -fingerprint -sha256 | sed 's/.*=//')
  [ -n "$logged" ] && [ "$logged" = "$served" ] || fail "logged fingerprint '$logged' is not the certificate's '$served'"
  stop_box
  echo "smoke: ok: $version over TLS on 127.0.0.1:$PORT (1.2 and 1.3 accepted, 1.0 and 1.1 refused), start page served, http redirects, fingerprint $served"
}

install_check() {
  local bin=$1 dest="$TMP/destdir"
  make --no-print-directory install DESTDIR="$dest" PREFIX=/usr KEKSBOX_BIN="$bin" >/dev/null
  for f in usr/bin/keksbox usr/lib/systemd/system/keksbox.service usr/lib/systemd/system/keksbox.socket \
           usr/lib/sysusers.d/keksbox.conf etc/keksbox/keksbox.toml usr/share/doc/keksbox/default.toml; do
    [ -e "$dest/$f" ] || fail "make install did not install /$f"
  done
  grep -q '^ExecStart=/usr/bin/keksbox --config /etc/keksbox/keksbox.toml$' "$dest/usr/lib/systemd/system/keksbox.service" \
    || fail "installed unit does not start /usr/bin/keksbox with /etc/keksbox/keksbox.toml"
  # verify resolves ExecStart= on this machine: point it into DESTDIR.
  mkdir -p "$TMP/installed"
  sed "s|/usr/bin/keksbox|$dest/usr/bin/keksbox|" "$dest/usr/lib/systemd/system/keksbox.service" > "$TMP/installed/keksbox.service"
  cp "$dest/usr/lib/systemd/system/keksbox.socket" "$TMP/installed/"
  systemd-analyze verify "$TMP/installed/keksbox.service" "$TMP/installed/keksbox.socket" || fail "installed units do not verify"
  echo "install: ok (DESTDIR layout, installed unit verifies)"
}

# Size of each binary, and the resident memory of an idle keksbox (native binaries only:
# under qemu the figure would be the emulator's).
figures() {
  for bin in "$@"; do
    [ -f "$bin" ] || { echo "figures: $bin missing"; continue; }
    printf 'size: %-60s %6.1f MiB  %s\n' "$bin" "$(awk "BEGIN { print $(stat -c %s "$bin") / 1048576 }")" \
      "$(file -b "$bin" | grep -o 'statically linked\|static-pie linked\|dynamically linked')"
    if [ "$(file -b "$bin" | grep -o 'x86-64')" = x86-64 ]; then
      start_box "$bin"
      curl -s --max-time 10 --cacert "$STATE/tls/cert.pem" "https://localhost:$PORT/" >/dev/null
      sleep 1
      echo "idle RSS: $bin: $(grep VmRSS /proc/"$PID"/status | awk '{print $2, $3}') (TLS on, after one page load)"
      stop_box
    fi
  done
}

case "${1:-}" in
  systemd) check_systemd ;;
  smoke) shift; smoke "$@" ;;
  install) shift; install_check "$@" ;;
  figures) shift; figures "$@" ;;
  *) echo "usage: $0 systemd | smoke BIN [EMULATOR] | install BIN | figures BIN..." >&2; exit 2 ;;
esac
