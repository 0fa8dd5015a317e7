#!/bin/bash
# Updates keksbox, and keksbox-peer when an aarch64 build of it is given or built, on a
# running box over SSH, without a new card (docs/UPDATING.md).
# What `make install` would put under /usr (binaries, units, sysusers files) goes to the box;
# /etc/keksbox (the owner's keksbox.toml and peer.toml) and /var/lib/keksbox (the TLS
# certificate and key, so the fingerprint people accepted) are not touched. The old binaries
# are kept as /usr/bin/keksbox.previous and /usr/bin/keksbox-peer.previous, and put back if
# the new one does not come up.
#
# Usage: image/update.sh [user@]HOST [KEKSBOX_BIN [KEKSBOX_PEER_BIN]]
#   KEKSBOX_BIN defaults to make release-aarch64's binary.
#   KEKSBOX_PEER_BIN (argument or environment) defaults to make release-aarch64-peer's binary
#     when it exists; set it empty (KEKSBOX_PEER_BIN=) to update keksbox alone.
#   SSH_OPTS: extra ssh options, e.g. SSH_OPTS="-p 2222 -i ~/.ssh/keksbox".
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
repo=$(dirname "$here")
. "$here/lib.sh"

usage="usage: update.sh [user@]HOST [KEKSBOX_BIN [KEKSBOX_PEER_BIN]]"
host=${1:?$usage}
release=$repo/target/debian/aarch64-unknown-linux-gnu/release
bin=${2:-$release/keksbox}
[ -f "$bin" ] || die "$bin missing: make release-aarch64"
file -b "$bin" | grep -q 'ARM aarch64.*statically linked' ||
    die "$bin is not a static aarch64 binary ($(file -b "$bin")): make release-aarch64 builds one"
if [ $# -ge 3 ]; then
    peer=$3
elif [ -n "${KEKSBOX_PEER_BIN+set}" ]; then
    peer=$KEKSBOX_PEER_BIN
elif [ -f "$release/keksbox-peer" ]; then
    peer=$release/keksbox-peer
else
    # Not built and not asked for: keksbox alone, as on a box without a camera.
    peer=""
fi
if [ -n "$peer" ]; then
    [ -f "$peer" ] || die "$peer missing: make release-aarch64-peer (or KEKSBOX_PEER_BIN= for keksbox alone)"
    file -b "$peer" | grep -q 'ARM aarch64' ||
        die "$peer is not an aarch64 binary ($(file -b "$peer")): make release-aarch64-peer builds one"
fi
need_tools ssh:openssh-client tar:tar file:file
read -r -a ssh_opts <<< "${SSH_OPTS:-}"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
# The same files as on any install. KEKSBOX_PEER_BIN is always passed: empty, make install
# leaves the peer out instead of picking up whatever lies next to KEKSBOX_BIN.
make -C "$repo" --no-print-directory --quiet install DESTDIR="$stage/root" PREFIX=/usr SYSCONFDIR=/etc \
    KEKSBOX_BIN="$(readlink -f "$bin")" KEKSBOX_PEER_BIN="${peer:+$(readlink -f "$peer")}" >/dev/null
if [ -n "$peer" ]; then
    [ -f "$stage/root/usr/bin/keksbox-peer" ] || die "make install left keksbox-peer out of $stage/root"
    # The shipped peer.toml goes along for a box that has none yet (a first peer install);
    # the box keeps its own when it has one.
    tar_extra=(etc/keksbox/peer.toml)
else
    tar_extra=()
fi
tar -C "$stage/root" -czf "$stage/payload.tar.gz" usr "${tar_extra[@]}"

echo "update: sending keksbox${peer:+ and keksbox-peer} to $host"
ssh "${ssh_opts[@]}" "$host" 'mkdir -p /var/tmp/keksbox-update && cat > /var/tmp/keksbox-update/payload.tar.gz' \
    < "$stage/payload.tar.gz"
ssh "${ssh_opts[@]}" "$host" sh -s <<'EOF'
set -eu
d=/var/tmp/keksbox-update
rm -rf "$d/new"
mkdir "$d/new"
tar -C "$d/new" -xzf "$d/payload.tar.gz"
new="$d/new/usr/bin/keksbox"
new_peer="$d/new/usr/bin/keksbox-peer"
# They must run on this box before anything is replaced: the architecture, and for the
# dynamically linked peer the box's own libasound and libstdc++.
"$new" --version >/dev/null || { echo "update: the new keksbox does not run here (wrong architecture?)" >&2; exit 1; }
if [ -e "$new_peer" ]; then
    "$new_peer" --version >/dev/null ||
        { echo "update: the new keksbox-peer does not run here (a missing library? apt-get install libasound2 libstdc++6)" >&2; exit 1; }
fi

# Puts $1 in place as /usr/bin/$2, keeping the old one as /usr/bin/$2.previous. A rename is
# atomic: a service never sees half a binary.
replace() {
    [ -e "/usr/bin/$2" ] && cp -p "/usr/bin/$2" "/usr/bin/$2.previous"
    install -m 0755 "$1" "/usr/bin/$2.new"
    mv -f "/usr/bin/$2.new" "/usr/bin/$2"
}
# Puts the previous binary back and restarts its service; for a service that did not come up.
roll_back() {
    echo "update: the new $1 did not start; putting the previous one back" >&2
    journalctl -u "$1.service" -n 20 --no-pager >&2 || true
    mv -f "/usr/bin/$1.previous" "/usr/bin/$1"
    systemctl restart "$1.service"
    exit 1
}

replace "$new" keksbox
install -m 0644 "$d"/new/usr/lib/systemd/system/keksbox.service "$d"/new/usr/lib/systemd/system/keksbox.socket /usr/lib/systemd/system/
install -m 0644 "$d"/new/usr/lib/sysusers.d/keksbox.conf /usr/lib/sysusers.d/keksbox.conf
install -m 0644 "$d"/new/usr/share/doc/keksbox/default.toml /usr/share/doc/keksbox/default.toml
systemd-sysusers
systemctl daemon-reload
systemctl restart keksbox.service
# Type=notify: active means it is listening again with the same certificate.
systemctl is-active --quiet keksbox.service || roll_back keksbox
echo "update: $(/usr/bin/keksbox --version) is running; config and certificate kept"

# The peer after keksbox is up: a keksbox rolled back leaves the peer as it was.
if [ -e "$new_peer" ]; then
    peer_was_active=no
    systemctl is-active --quiet keksbox-peer.service && peer_was_active=yes
    replace "$new_peer" keksbox-peer
    install -m 0644 "$d"/new/usr/lib/systemd/system/keksbox-peer.service /usr/lib/systemd/system/
    install -m 0644 "$d"/new/usr/lib/sysusers.d/keksbox-peer.conf /usr/lib/sysusers.d/keksbox-peer.conf
    # The owner's peer.toml is kept; the shipped one only where there is none.
    [ -e /etc/keksbox/peer.toml ] || install -D -m 0644 "$d"/new/etc/keksbox/peer.toml /etc/keksbox/peer.toml
    systemd-sysusers
    systemctl daemon-reload
    # The peer is off until its owner configures it: one that was running is restarted
    # (Type=notify: active once its devices and room are started), one that was not stays off.
    if [ "$peer_was_active" = yes ]; then
        systemctl restart keksbox-peer.service
        systemctl is-active --quiet keksbox-peer.service || roll_back keksbox-peer
        echo "update: $(/usr/bin/keksbox-peer --version) is running; peer.toml kept"
    else
        echo "update: $(/usr/bin/keksbox-peer --version) installed, keksbox-peer.service $(systemctl is-enabled keksbox-peer.service 2>/dev/null || true) and not started; peer.toml kept"
    fi
fi
rm -rf "$d"
EOF
