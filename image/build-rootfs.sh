#!/bin/bash
# The slow half of the image: a Debian stable arm64 tree with the kernel, the Pi firmware and
# the appliance's system packages, made by mmdebstrap under qemu-user emulation and cached as
# a tarball (target/image/rootfs.tar). Nothing of keksbox is in it, so a new keksbox does not
# make this again; image/assemble.sh adds keksbox and makes the card image.
#
# Usage: image/build-rootfs.sh OUT.tar     (as root)
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
. "$here/lib.sh"

out=${1:?usage: build-rootfs.sh OUT.tar}
need_root "the rootfs build"
need_tools mmdebstrap:mmdebstrap arch-test:arch-test qemu-aarch64-static:qemu-user-static \
    update-binfmts:binfmt-support
need_binfmt_aarch64

suite=${DEBIAN_SUITE:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

# What the appliance runs besides keksbox. Each line says why.
packages=(
    systemd-sysv udev kmod dbus          # init, devices, modules; dbus for resolved and logind
    linux-image-arm64 initramfs-tools zstd  # Debian's kernel (Pi 3/4/400/CM4/Zero 2 W and qemu virt)
    raspi-firmware                       # the Pi's boot firmware and its kernel hooks (non-free-firmware)
    firmware-brcm80211 wireless-regdb    # on-board Wi-Fi firmware and regulatory database
    dosfstools fdisk e2fsprogs           # fsck.vfat, sfdisk (grow root at first boot), resize2fs
    iproute2 netbase                     # ip for the banner's address; /etc/services etc.
    systemd-resolved systemd-timesyncd   # DNS from DHCP; NTP when reachable, saved clock when not
    wpasupplicant                        # optional Wi-Fi from wifi.txt on the boot partition
    openssh-server                       # only started when ssh.txt on the boot partition holds a key
    openssl qrencode                     # the console banner: fingerprint and QR code
    procps less                          # for whoever logs in over SSH
    libasound2 libstdc++6                # keksbox-peer's shared libraries (ALSA; openh264 is C++)
)
include=$(IFS=,; echo "${packages[*]}")

mkdir -p "$(dirname "$out")"
# mmdebstrap picks the output format from the name: keep .tar at the end.
tmp="${out%.tar}.partial.tar"
rm -f "$tmp"
# SOURCE_DATE_EPOCH (when set) makes mmdebstrap's own time stamps reproducible.
# essential hook: every update-initramfs during the installation becomes a no-op (the kernel,
# initramfs-tools, udev and kmod would each trigger a full run, ~12 min each under emulation);
# stage/customize.sh runs the real one once, with a short module list.
# dpkgopt: path filters that leave out documentation and kernel modules no Pi needs (about
# 250 MB of the tree); they stay in the image for later upgrades (stage/dpkg-filter).
mmdebstrap --mode=root --format=tar --arch=arm64 --variant=minbase \
    --components=main,non-free-firmware \
    --dpkgopt="$here/stage/dpkg-filter" \
    --include="$include" \
    --essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs' \
    --essential-hook='printf "#!/bin/sh\necho update-initramfs: deferred to the end of the image build >&2\n" > "$1/usr/sbin/update-initramfs" && chmod 0755 "$1/usr/sbin/update-initramfs"' \
    --customize-hook="\"$here/stage/customize.sh\" \"\$1\"" \
    "$suite" "$tmp" \
    "deb $mirror $suite main non-free-firmware" \
    "deb $mirror $suite-updates main non-free-firmware" \
    "deb $security $suite-security main non-free-firmware"
mv "$tmp" "$out"
echo "image: rootfs in $out ($(du -h "$out" | cut -f1))"
