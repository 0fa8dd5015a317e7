#!/bin/bash
# make vm-test: boots Debian's x86_64 kernel in qemu (software emulation; KVM hangs here) with a
# busybox initramfs holding the vivid and snd-aloop modules, the device check binary
# (examples/vm-devices.rs) and its shared libraries, and reads the verdict from the serial
# console. The VM has no network card. Usage: run.sh path/to/vm-devices
set -euo pipefail
BIN=$(realpath "$1")
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(realpath "${VM_WORK:-target/vm}")
mkdir -p "$WORK"

# The kernel and its modules, from Debian's archive (once).
if ! ls "$WORK"/kernel/boot/vmlinuz-* >/dev/null 2>&1; then
  pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
  [ -n "$pkg" ] || { apt-get update -q; pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}'); }
  (cd "$WORK" && rm -f linux-image-*.deb && apt-get download "$pkg")
  rm -rf "$WORK/kernel" && dpkg-deb -x "$WORK"/linux-image-*.deb "$WORK/kernel"
fi
VMLINUZ=$(ls "$WORK"/kernel/boot/vmlinuz-* | head -1)
KVER=${VMLINUZ##*/vmlinuz-}
MODS="$WORK/kernel/lib/modules/$KVER"
# The package leaves modules.dep to its postinst script.
[ -f "$MODS/modules.dep" ] || depmod -b "$WORK/kernel" "$KVER"

# The initramfs: busybox, the modules vivid and snd-aloop need (from modules.dep), the check
# binary with its libraries and the ALSA configuration.
ROOT="$WORK/root"
rm -rf "$ROOT" && mkdir -p "$ROOT"/{bin,proc,sys,dev,tmp,lib/modules/"$KVER"}
cp /bin/busybox "$ROOT/bin/busybox"
cp "$HERE/init" "$ROOT/init"
# Without debug info: a debug build is mostly that, and the initramfs is unpacked into RAM.
strip --strip-debug -o "$ROOT/vm-devices" "$BIN"
for lib in $(ldd "$BIN" | grep -o '/[^ ]*'); do
  mkdir -p "$ROOT$(dirname "$lib")" && cp -L "$lib" "$ROOT$lib"
done
mkdir -p "$ROOT/usr/share" && cp -r /usr/share/alsa "$ROOT/usr/share/alsa"
needed() { # module path relative to $MODS, then its dependencies, recursively
  local m=$1
  echo "$m"
  for d in $(awk -F: -v m="$m" '$1 == m {print $2}' "$MODS/modules.dep"); do needed "$d"; done
}
for name in vivid snd-aloop; do
  path=$(awk -F: '{print $1}' "$MODS/modules.dep" | grep "/$name.ko" | head -1)
  for m in $(needed "$path" | sort -u); do
    mkdir -p "$ROOT/lib/modules/$KVER/$(dirname "$m")"
    cp "$MODS/$m" "$ROOT/lib/modules/$KVER/$m"
  done
done
cp "$MODS"/modules.{order,builtin} "$ROOT/lib/modules/$KVER/" 2>/dev/null || true
depmod -b "$ROOT" "$KVER" 2>/dev/null
(cd "$ROOT" && find . | cpio -o -H newc --quiet | gzip -1) > "$WORK/initrd.gz"

LOG="$WORK/console.log"
echo "vm-test: booting $KVER with $(du -h "$WORK/initrd.gz" | cut -f1) initramfs; console in $LOG"
start=$(date +%s)
timeout "${VM_TIMEOUT:-300}" qemu-system-x86_64 -accel tcg -m 512 -nographic -no-reboot -nic none \
  -kernel "$VMLINUZ" -initrd "$WORK/initrd.gz" \
  -append "console=ttyS0 panic=-1 quiet" </dev/null >"$LOG" 2>&1 || true
grep -E 'camera|microphone|hotplug|VM-TEST' "$LOG" | tr -d '\r' || true
echo "vm-test: $(( $(date +%s) - start )) s in the VM"
grep -q 'VM-TEST PASS' "$LOG" || { echo "vm-test: FAILED (see $LOG)"; tail -30 "$LOG"; exit 1; }
