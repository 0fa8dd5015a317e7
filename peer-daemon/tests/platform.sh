#!/usr/bin/env bash
# keksbox-peer checks that are not cargo tests (run by `make test-platform`):
#
#   platform.sh smoke BIN EMULATOR KEKSBOX   the aarch64 build under qemu-user: linked as
#                                            documented, --version/--help, config errors, and a
#                                            run with synthetic devices in a room on KEKSBOX
#   platform.sh install KEKSBOX_BIN PEER_BIN `make install` of both into a temporary DESTDIR:
#                                            the peer's files, its unit verifies, sysusers
#                                            makes its user, a reinstall keeps peer.toml
#
# The run happens in a network namespace of its own (unshare -n, loopback only): keksbox on
# 127.0.0.1 with TLS, keksbox-peer pinned to its certificate, and a protocol client from the
# web tests (web/test/e2e/wire-client.mjs) that sees the daemon identify and provide.
set -euo pipefail
cd "$(dirname "$0")/../.."

TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do { kill -KILL "$pid" && wait "$pid"; } 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

# The libraries the aarch64 build may need at run time (README "Installing on a board"): a new
# one must be documented and put on the image, so it fails here first.
ALLOWED_NEEDED="libasound.so.2 libc.so.6 libgcc_s.so.1 libm.so.6 libstdc++.so.6 ld-linux-aarch64.so.1"

# Runs BIN under EMULATOR with ARGS; stdout+stderr in $OUT, exit status in $STATUS. Bounded:
# under qemu a hang would otherwise stall make.
run_peer() {
  STATUS=0
  OUT=$(timeout 60 $EMULATOR "$BIN" "$@" 2>&1) || STATUS=$?
}

smoke() {
  BIN=$1 EMULATOR=$2 KEKSBOX=$3
  [ -f "$BIN" ] || fail "$BIN missing (make release-aarch64-peer)"
  [ -x "$KEKSBOX" ] || fail "$KEKSBOX missing (cargo build -p keksbox)"
  local kind
  kind=$(file -b "$BIN")
  echo "smoke: $BIN: $kind"
  case "$kind" in
    *"ARM aarch64"*"dynamically linked"*) ;;
    *) fail "$BIN is not a dynamically linked aarch64 binary" ;;
  esac
  local needed lib
  needed=$(aarch64-linux-gnu-readelf -d "$BIN" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | sort | tr '\n' ' ')
  for lib in $needed; do
    [[ " $ALLOWED_NEEDED " == *" $lib "* ]] || fail "$BIN needs $lib, which is not documented (README, image)"
  done
  [[ " $needed" == *" libasound.so.2 "* ]] || fail "$BIN does not link libasound: $needed"
  echo "smoke: needs $needed"

  run_peer --version
  [ "$STATUS" = 0 ] && [[ "$OUT" == "keksbox-peer "* ]] || fail "--version: status $STATUS: $OUT"
  echo "smoke: --version: $OUT"
  run_peer --help
  [ "$STATUS" = 0 ] && grep -q -- '--config <CONFIG>' <<<"$OUT" && grep -q 'never taken from the command line' <<<"$OUT" \
    || fail "--help: status $STATUS: $OUT"
  echo "smoke: --help ok"

  # Bad configs: exit status 2 and a message that says what to fix.
  printf '[room]\nname = "x"\nbogus = 1\n' > "$TMP/unknown.toml"
  run_peer --config "$TMP/unknown.toml" --check
  [ "$STATUS" = 2 ] && grep -q 'unknown field `bogus`' <<<"$OUT" || fail "unknown key: status $STATUS: $OUT"
  printf '[room]\nsecret_file = "%s/no-such-secret"\n' "$TMP" > "$TMP/nosecret.toml"
  run_peer --config "$TMP/nosecret.toml" --check
  [ "$STATUS" = 2 ] && grep -q 'cannot read the room secret.*set \[room\] secret_file' <<<"$OUT" \
    || fail "missing secret: status $STATUS: $OUT"
  # A PCM that does not exist: the target's libasound answers, through its own config files.
  printf '[video]\ndevice = "synthetic"\n[audio]\npcm = "no-such-pcm"\n' > "$TMP/nopcm.toml"
  run_peer --config "$TMP/nopcm.toml" --check
  [ "$STATUS" = 2 ] && grep -q '\[audio\] pcm = "no-such-pcm": device missing: ALSA PCM "no-such-pcm" not found' <<<"$OUT" \
    || fail "unknown PCM: status $STATUS: $OUT"
  printf '[video]\ndevice = "synthetic"\n[audio]\npcm = "synthetic"\n' > "$TMP/check.toml"
  run_peer --config "$TMP/check.toml" --check
  [ "$STATUS" = 0 ] && grep -q 'ok (no room configured' <<<"$OUT" || fail "--check with synthetic devices: status $STATUS: $OUT"
  # The synthetic H.264 camera: openh264 starts on the target.
  printf '[video]\ndevice = "synthetic"\nformat = "h264"\n[audio]\nenabled = false\n' > "$TMP/h264.toml"
  run_peer --config "$TMP/h264.toml" --check
  [ "$STATUS" = 0 ] || fail "--check with the synthetic H.264 camera: status $STATUS: $OUT"
  echo "smoke: config errors ok (unknown key, missing secret file, unknown PCM); --check with synthetic devices ok (I420 and H.264)"

  export BIN EMULATOR KEKSBOX
  unshare -n "$0" smoke-run
}

# Inside the namespace: keksbox with TLS, the daemon pinned to its certificate, and a
# protocol client in the same room that must see the daemon's name and both tracks.
smoke_run() {
  ip link set lo up
  local state="$TMP/box" log="$TMP/box.log"
  mkdir -p "$state"
  : > "$log"
  printf '[server]\nbind = "127.0.0.1:0"\n[tls]\nredirect_bind = "127.0.0.1:0"\n' > "$TMP/box.toml"
  RUST_LOG=info "$KEKSBOX" --config "$TMP/box.toml" --state-dir "$state" 2> "$log" &
  PIDS+=($!)
  local port="" fp="" i
  for i in $(seq 1 300); do
    port=$(sed -n 's|.*serving https://127.0.0.1:\([0-9]*\)/.*|\1|p' "$log" | head -1)
    fp=$(sed -n 's/.*certificate SHA-256 fingerprint \([0-9A-F:]*\).*/\1/p' "$log" | head -1)
    [ -n "$port" ] && [ -n "$fp" ] && break
    sleep 0.1
  done
  [ -n "$port" ] && [ -n "$fp" ] || { cat "$log" >&2; fail "keksbox did not start"; }

  local secret name="Room 2 camera"
  secret="platform-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
  printf '%s\n' "$secret" > "$TMP/secret"
  chmod 0600 "$TMP/secret"
  cat > "$TMP/peer.toml" <<EOF
[room]
server = "https://127.0.0.1:$port"
fingerprint = "$fp"
secret_file = "$TMP/secret"
name = "$name"
ice_bind = ["127.0.0.1"]
[video]
device = "synthetic"
width = 320
height = 240
fps = 15
[audio]
pcm = "synthetic"
EOF
  local plog="$TMP/peer.log"
  : > "$plog"
  RUST_LOG=info $EMULATOR "$BIN" --config "$TMP/peer.toml" > "$plog" 2>&1 &
  local peer=$!
  PIDS+=("$peer")
  local t0=$SECONDS
  for i in $(seq 1 900); do
    grep -q 'providing the camera' "$plog" && grep -q 'providing the microphone' "$plog" && break
    kill -0 "$peer" 2>/dev/null || { cat "$plog" >&2; fail "keksbox-peer exited"; }
    sleep 0.1
  done
  grep -q 'providing the camera' "$plog" && grep -q 'providing the microphone' "$plog" \
    || { cat "$plog" >&2; fail "keksbox-peer did not join and provide within 90 s"; }
  echo "smoke: keksbox-peer (aarch64, qemu) joined over TLS and provides camera and microphone after $((SECONDS - t0)) s"

  # Another member of the room: decrypts what the daemon says to it.
  local seen
  seen=$(cd web && SECRET="$secret" PORT="$port" NAME="$name" NODE_TLS_REJECT_UNAUTHORIZED=0 node --no-warnings --input-type=module -e '
    import { connect } from "./test/e2e/wire-client.mjs";
    const c = await connect(`wss://127.0.0.1:${process.env.PORT}/signaling`, process.env.SECRET, "platform-check");
    const end = Date.now() + 30000;
    const has = (f) => c.inbox.some((m) => f(m.inner));
    const done = () => has((i) => i.identify?.username === process.env.NAME) &&
      has((i) => i.provide?.kind === "track" && i.provide.track_kind === "video") &&
      has((i) => i.provide?.kind === "track" && i.provide.track_kind === "audio");
    while (!done() && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
    console.log(JSON.stringify(c.inbox.map((m) => m.inner)));
    c.close();
    process.exit(done() ? 0 : 1);
  ') || { cat "$plog" >&2; fail "the other member did not see the daemon identify and provide both tracks: $seen"; }
  echo "smoke: another member saw: $seen"

  grep -qF "$secret" "$plog" && fail "the secret is in the daemon's log"
  kill -TERM "$peer"
  for i in $(seq 1 200); do kill -0 "$peer" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$peer" 2>/dev/null && { cat "$plog" >&2; fail "keksbox-peer still runs 20 s after SIGTERM"; }
  local status=0
  wait "$peer" || status=$?
  [ "$status" = 0 ] || { cat "$plog" >&2; fail "keksbox-peer: exit status $status after SIGTERM"; }
  echo "smoke: ok: stopped cleanly on SIGTERM"
}

install_check() {
  local dest="$TMP/destdir"
  make --no-print-directory install DESTDIR="$dest" PREFIX=/usr KEKSBOX_BIN="$1" KEKSBOX_PEER_BIN="$2" >/dev/null
  for f in usr/bin/keksbox-peer usr/lib/systemd/system/keksbox-peer.service usr/lib/sysusers.d/keksbox-peer.conf \
           etc/keksbox/peer.toml usr/bin/keksbox usr/lib/systemd/system/keksbox.service; do
    [ -e "$dest/$f" ] || fail "make install did not install /$f"
  done
  grep -q '^ExecStart=/usr/bin/keksbox-peer --config /etc/keksbox/peer.toml$' "$dest/usr/lib/systemd/system/keksbox-peer.service" \
    || fail "installed unit does not start /usr/bin/keksbox-peer with /etc/keksbox/peer.toml"
  cmp -s config/peer.toml "$dest/etc/keksbox/peer.toml" || fail "/etc/keksbox/peer.toml is not config/peer.toml"
  mkdir -p "$TMP/installed"
  sed "s|/usr/bin/keksbox-peer|$dest/usr/bin/keksbox-peer|" "$dest/usr/lib/systemd/system/keksbox-peer.service" \
    > "$TMP/installed/keksbox-peer.service"
  systemd-analyze verify "$TMP/installed/keksbox-peer.service" || fail "the installed keksbox-peer.service does not verify"
  mkdir -p "$TMP/root/etc"
  systemd-sysusers --root="$TMP/root" "$dest/usr/lib/sysusers.d/keksbox-peer.conf" >/dev/null 2>&1 || fail "sysusers"
  grep -q '^keksbox-peer:' "$TMP/root/etc/passwd" || fail "sysusers made no keksbox-peer user"
  # A second install keeps the owner's config.
  echo '# edited' >> "$dest/etc/keksbox/peer.toml"
  make --no-print-directory install DESTDIR="$dest" PREFIX=/usr KEKSBOX_BIN="$1" KEKSBOX_PEER_BIN="$2" >/dev/null
  grep -q '^# edited$' "$dest/etc/keksbox/peer.toml" || fail "make install overwrote /etc/keksbox/peer.toml"
  echo "install: ok (keksbox-peer, its unit (verifies), sysusers (user keksbox-peer), /etc/keksbox/peer.toml kept on reinstall)"
}

case "${1:-}" in
  smoke) shift; smoke "$@" ;;
  smoke-run) smoke_run ;;
  install) shift; install_check "$@" ;;
  *) echo "usage: $0 smoke BIN EMULATOR KEKSBOX | install KEKSBOX_BIN PEER_BIN" >&2; exit 2 ;;
esac
