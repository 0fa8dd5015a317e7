#!/bin/bash
# The fast half of the image (no emulation): the cached Debian tree from build-rootfs.sh,
# plus keksbox (`make install DESTDIR=`), the appliance's settings (image/overlay), and then
# the card image: an MBR with a FAT boot partition (what the Pi's firmware reads: firmware,
# kernel, initramfs, device trees, config.txt, cmdline.txt) and an ext4 root.
#
# Usage: image/assemble.sh ROOTFS.tar KEKSBOX_BIN OUT.img    (as root)
# KEKSBOX_PEER_BIN (optional): the aarch64 keksbox-peer to include.
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
repo=$(dirname "$here")
. "$here/lib.sh"

rootfs_tar=${1:?usage: assemble.sh ROOTFS.tar KEKSBOX_BIN OUT.img}
keksbox_bin=${2:?usage: assemble.sh ROOTFS.tar KEKSBOX_BIN OUT.img}
out=${3:?usage: assemble.sh ROOTFS.tar KEKSBOX_BIN OUT.img}
peer_bin=${KEKSBOX_PEER_BIN:-}

need_root "the image assembly"
need_tools qemu-aarch64-static:qemu-user-static mkfs.vfat:dosfstools mcopy:mtools mkfs.ext4:e2fsprogs sfdisk:fdisk systemctl:systemd file:file
[ -f "$rootfs_tar" ] || die "$rootfs_tar missing: make it with image/build-rootfs.sh (make image does)"
[ -f "$keksbox_bin" ] || die "$keksbox_bin missing: make release-aarch64"
file -b "$keksbox_bin" | grep -q 'ARM aarch64.*statically linked' ||
    die "$keksbox_bin is not a static aarch64 binary ($(file -b "$keksbox_bin"))"

# Sizes in MiB. The boot partition starts at 8 MiB (SD cards erase in 4 MiB blocks).
BOOT_START=8
BOOT_SIZE=256

work=$(mktemp -d "$(readlink -f "$(dirname "$out")")/assemble.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir "$root"
tar -C "$root" --numeric-owner --xattrs --xattrs-include='*' -xpf "$rootfs_tar"

# The appliance's settings. Files from the repository, owned by root, not writable by others.
tar -C "$here/overlay" --owner=0 --group=0 --mode=go-w -c . | tar -C "$root" -x --no-same-owner

# keksbox itself, and keksbox-peer when its aarch64 build exists, exactly as on any other
# machine: `make install` installs the peer (binary, unit, sysusers file, peer.toml) when
# KEKSBOX_PEER_BIN names a file. Always passed, empty for none, so make install does not
# pick up a keksbox-peer lying next to KEKSBOX_BIN instead.
[ -n "$peer_bin" ] && [ -f "$peer_bin" ] || peer_bin=""
if [ -n "$peer_bin" ]; then
    file -b "$peer_bin" | grep -q 'ARM aarch64' || die "$peer_bin is not an aarch64 binary ($(file -b "$peer_bin"))"
fi
make -C "$repo" --no-print-directory install DESTDIR="$root" PREFIX=/usr SYSCONFDIR=/etc \
    KEKSBOX_BIN="$(readlink -f "$keksbox_bin")" KEKSBOX_PEER_BIN="${peer_bin:+$(readlink -f "$peer_bin")}"
if [ -n "$peer_bin" ]; then
    [ -x "$root/usr/bin/keksbox-peer" ] && [ -e "$root/usr/lib/systemd/system/keksbox-peer.service" ] ||
        die "make install did not install keksbox-peer from $peer_bin (see the Makefile's install-peer)"
    # It links libasound and libstdc++ dynamically: it must start in the image's own tree
    # (through qemu-user, binfmt), or the image lacks a library (build-rootfs.sh's list).
    need_binfmt_aarch64
    peer_version=$(chroot "$root" /usr/bin/keksbox-peer --version) ||
        die "keksbox-peer does not start in the image (a shared library missing from image/build-rootfs.sh's packages?)"
    echo "image: $peer_version included (installed, not enabled: it needs a camera and a room)"
else
    echo "image: no aarch64 keksbox-peer at ${KEKSBOX_PEER_BIN:-(KEKSBOX_PEER_BIN unset)}: not included"
fi

# Units: systemctl --root only makes the symlinks, nothing runs.
systemctl --root="$root" --quiet enable keksbox.service systemd-networkd.service \
    systemd-resolved.service systemd-timesyncd.service keksbox-firstboot.service \
    keksbox-bootfiles.service keksbox-banner.service keksbox-clock.timer
# sshd only when ssh-authorized-keys.txt holds a key (keksbox-bootfiles starts it).
# Debian's wpa_supplicant.service (D-Bus only, for NetworkManager) is not used:
# keksbox-wifi.service runs wpa_supplicant on wlan0 when wifi.txt asks for it.
systemctl --root="$root" --quiet disable ssh.service wpa_supplicant.service
# keksbox-peer is off until someone configures it (docs/IMAGE.md): never enabled here.
if [ -e "$root/usr/lib/systemd/system/keksbox-peer.service" ]; then
    systemctl --root="$root" --quiet disable keksbox-peer.service
fi
# No login prompts (tty1 shows the banner; serial consoles get none either), and no
# first-boot questions (locale, time zone, root password) on a console nobody watches.
systemctl --root="$root" --quiet mask getty.target systemd-firstboot.service
# e2scrub checks ext4 file systems on LVM snapshots; the box has no LVM. Its reaper took
# 25-35 s of every boot under the boot test's emulation, for nothing.
systemctl --root="$root" --quiet mask e2scrub_reap.service e2scrub_all.timer
# No password for anyone: root logs in over SSH with a key or not at all.
sed -i 's/^root:[^:]*:/root:*:/' "$root/etc/shadow"

# Time without NTP: systemd moves the clock at boot to at least the time of these files,
# so the first boot starts at the build time, not 1970 (and TLS dates make sense).
touch "$root/usr/lib/clock-epoch"
mkdir -p "$root/var/lib/systemd/timesync"
touch "$root/var/lib/systemd/timesync/clock"
# timesyncd (and keksbox-clock) update it as their own user: the image's uid, not the host's.
timesync_ids=$(awk -F: '$1 == "systemd-timesync" {print $3 ":" $4}' "$root/etc/passwd")
[ -n "$timesync_ids" ] || die "no systemd-timesync user in the rootfs"
chown "$timesync_ids" "$root/var/lib/systemd/timesync" "$root/var/lib/systemd/timesync/clock"

# What is in this image, for a person reading it over SSH and for bug reports. The commit
# ends in -dirty when the tree had uncommitted changes (which the binaries may hold).
version=$(qemu-aarch64-static "$keksbox_bin" --version 2>/dev/null || echo unknown)
cat > "$root/etc/keksbox-image-release" <<EOF
KEKSBOX_VERSION="$version"
KEKSBOX_IMAGE_BUILT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
KEKSBOX_IMAGE_COMMIT=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown)
KEKSBOX_PEER="${peer_version:-no}"
EOF

# The boot partition: what raspi-firmware put in /boot/firmware, plus the files a person
# reads or writes there. /boot/firmware stays as the (empty) mount point.
boot=$work/boot
mkdir "$boot"
cp -r "$root/boot/firmware/." "$boot/"
find "$root/boot/firmware" -mindepth 1 -delete
install -m 0644 "$here/boot/README-keksbox.txt" "$here/boot/wifi-example.txt" "$boot/"
for f in cmdline.txt config.txt; do
    [ -s "$boot/$f" ] || die "the rootfs has no /boot/firmware/$f (raspi-firmware did not run): rebuild it with image/build-rootfs.sh"
done
ls "$boot"/vmlinuz-* "$boot"/initrd.img-* >/dev/null || die "no kernel or initramfs in /boot/firmware"

mkfs.vfat -F 32 -n KEKSBOOT -C "$work/boot.img" $((BOOT_SIZE * 1024)) >/dev/null
mcopy -s -i "$work/boot.img" "$boot"/* ::

# Root: what the tree needs plus a margin for the first boot (journal, keys); the partition
# grows to the card at first boot anyway.
used=$(du -sm "$root" | cut -f1)
root_size=$((used + used / 5 + 128))
mkfs.ext4 -q -L keksroot -d "$root" "$work/root.img" "${root_size}M"

total=$((BOOT_START + BOOT_SIZE + root_size))
rm -f "$out.partial"
truncate -s "${total}M" "$out.partial"
# MBR (every Pi's firmware reads it): FAT32 LBA boot partition, Linux root after it.
sfdisk --quiet "$out.partial" <<EOF
label: dos
start=${BOOT_START}MiB, size=${BOOT_SIZE}MiB, type=c, bootable
start=$((BOOT_START + BOOT_SIZE))MiB, type=83
EOF
dd if="$work/boot.img" of="$out.partial" bs=1M seek="$BOOT_START" conv=notrunc,sparse status=none
dd if="$work/root.img" of="$out.partial" bs=1M seek="$((BOOT_START + BOOT_SIZE))" conv=notrunc,sparse status=none
mv "$out.partial" "$out"
echo "image: $out ($total MiB: boot $BOOT_SIZE MiB, root $root_size MiB of which $used MiB used)"
