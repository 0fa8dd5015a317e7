# Shared by the image scripts: say what is missing instead of failing halfway.
# shellcheck shell=bash

die() {
    echo "image: $*" >&2
    exit 1
}

# Each tool the build or the boot test runs, and the Debian package that has it.
# `make image-deps` installs them all; a missing one is named here with its package.
need_tools() {
    local missing="" pair tool pkg
    for pair in "$@"; do
        tool=${pair%%:*}
        pkg=${pair#*:}
        command -v "$tool" >/dev/null 2>&1 || missing="$missing $pkg"
    done
    [ -z "$missing" ] || die "missing tools from these Debian packages:$missing (run: make image-deps, or apt-get install$missing)"
}

need_root() {
    [ "$(id -u)" = 0 ] || die "$1 must run as root (it chroots into an arm64 tree and writes file systems with root-owned files); run it with sudo"
}

# mmdebstrap runs the arm64 maintainer scripts through qemu-user: the kernel must hand aarch64
# ELF files to qemu-aarch64-static (binfmt_misc with the F flag, so it works inside chroots).
need_binfmt_aarch64() {
    if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null ||
            die "binfmt_misc is not mounted and cannot be (mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc)"
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 ||
            die "binfmt qemu-aarch64 is not registered (apt-get install qemu-user-static binfmt-support; update-binfmts --enable qemu-aarch64)"
    fi
    grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 ||
        die "binfmt qemu-aarch64 is registered but disabled (update-binfmts --enable qemu-aarch64)"
}
