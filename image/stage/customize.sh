#!/bin/bash
# Runs once at the end of mmdebstrap (customize hook) with the new tree as $1: the only step
# here that makes the initramfs, and the step that writes the Pi's boot files.
set -euo pipefail
root=$1
stage=$(dirname "$(readlink -f "$0")")

install -m 0644 "$stage/fstab" "$root/etc/fstab"
install -D -m 0644 "$stage/initramfs.conf" "$root/etc/initramfs-tools/conf.d/keksbox-image"
install -D -m 0644 "$stage/initramfs-modules" "$root/usr/share/initramfs-tools/modules.d/keksbox-image"

# raspi-firmware writes config.txt and cmdline.txt from these on every kernel update, on the
# box too: the settings live here, not in the FAT files.
# Root by label (SD card or USB); no cma= (the package's 64M default can keep a Pi 4 from
# booting, and the appliance runs no GPU driver); the mini UART (Pi 3/4) for a serial
# console, tty0 last so boot messages and the banner go to the HDMI screen.
sed -i -e 's|^#ROOTPART=.*|ROOTPART="LABEL=keksroot"|' \
       -e 's|^#CMA=.*|CMA=0|' \
       -e 's|^#CONSOLES=.*|CONSOLES="ttyS1,115200 tty0"|' "$root/etc/default/raspi-firmware"
grep -q '^ROOTPART="LABEL=keksroot"' "$root/etc/default/raspi-firmware"
# quiet: the HDMI screen is for the banner; consoleblank=0: it stays on.
echo "quiet consoleblank=0" > "$root/etc/default/raspi-extra-cmdline"

# The build deferred every update-initramfs (see the essential hook); now run the real one
# once. Its post-update hook (raspi-firmware) copies kernel, initrd and device trees to
# /boot/firmware and writes config.txt and cmdline.txt.
rm -f "$root/usr/sbin/update-initramfs"
chroot "$root" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs
chroot "$root" update-initramfs -c -k all
ls "$root"/boot/firmware/initrd.img-* "$root"/boot/firmware/vmlinuz-* "$root"/boot/firmware/cmdline.txt >/dev/null

# The path filters (dpkg-filter) must not have taken a module the Pi or the boot test needs:
# each one in modules-needed, and each module it depends on (modinfo's depends=, so a
# dependency the filters removed is caught even though depmod left it out), must resolve.
declare -A checked=()
check_module() {
    local m=$1 dep
    [ -z "${checked[$m]:-}" ] || return 0
    checked[$m]=1
    chroot "$root" modprobe -S "$kver" --show-depends "$m" >/dev/null ||
        { echo "customize: kernel module $m is missing: see image/stage/dpkg-filter" >&2; exit 1; }
    for dep in $(chroot "$root" modinfo -k "$kver" -F depends "$m" 2>/dev/null | tr , ' '); do
        check_module "$dep"
    done
}
for kver in $(ls "$root/usr/lib/modules"); do
    for m in $(sed 's/#.*//' "$stage/modules-needed"); do check_module "$m"; done
    echo "customize: $kver: ${#checked[@]} needed modules present, $(find "$root/usr/lib/modules/$kver" -name '*.ko*' | wc -l) in all ($(du -sm "$root/usr/lib/modules/$kver" | cut -f1) MiB)"
    checked=()
done

# Every box makes its own SSH host keys at first boot (keksbox-bootfiles); none ship.
rm -f "$root"/etc/ssh/ssh_host_*
# No identity in the image: systemd makes a machine id at first boot.
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
