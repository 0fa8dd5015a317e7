#!/bin/bash
# Updates keksbox on a running box over SSH, without a new card (docs/UPDATING.md).
# What `make install` would put under /usr (binary, units, sysusers file) goes to the box;
# /etc/keksbox (the owner's config) and /var/lib/keksbox (the TLS certificate and key, so
# the fingerprint people accepted) are not touched. The old binary is kept as
# /usr/bin/keksbox.previous, and put back if the new one does not come up.
#
# Usage: image/update.sh root@keksbox.local [KEKSBOX_BIN]
#   KEKSBOX_BIN defaults to make release-aarch64's binary.
#   SSH_OPTS: extra ssh options, e.g. SSH_OPTS="-p 2222 -i ~/.ssh/keksbox".
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
repo=$(dirname "$here")
. "$here/lib.sh"

host=${1:?usage: update.sh [user@]HOST [KEKSBOX_BIN]}
bin=${2:-$repo/target/debian/aarch64-unknown-linux-gnu/release/keksbox}
[ -f "$bin" ] || die "$bin missing: make release-aarch64"
need_tools ssh:openssh-client tar:tar
read -r -a ssh_opts <<< "${SSH_OPTS:-}"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
# The same files as on any install; the config is left out below (the box has its own).
make -C "$repo" --no-print-directory --quiet install DESTDIR="$stage/root" PREFIX=/usr SYSCONFDIR=/etc \
    KEKSBOX_BIN="$(readlink -f "$bin")" >/dev/null
tar -C "$stage/root" -czf "$stage/payload.tar.gz" usr

echo "update: sending keksbox to $host"
ssh "${ssh_opts[@]}" "$host" 'mkdir -p /var/tmp/keksbox-update && cat > /var/tmp/keksbox-update/payload.tar.gz' \
    < "$stage/payload.tar.gz"
ssh "${ssh_opts[@]}" "$host" sh -s <<'EOF'
set -eu
d=/var/tmp/keksbox-update
rm -rf "$d/new"
mkdir "$d/new"
tar -C "$d/new" -xzf "$d/payload.tar.gz"
new="$d/new/usr/bin/keksbox"
# It must run on this box before it replaces anything.
"$new" --version >/dev/null || { echo "update: the new keksbox does not run here (wrong architecture?)" >&2; exit 1; }
cp -p /usr/bin/keksbox /usr/bin/keksbox.previous
# A rename is atomic: the service never sees half a binary.
install -m 0755 "$new" /usr/bin/keksbox.new
mv -f /usr/bin/keksbox.new /usr/bin/keksbox
install -m 0644 "$d"/new/usr/lib/systemd/system/keksbox.service "$d"/new/usr/lib/systemd/system/keksbox.socket /usr/lib/systemd/system/
install -m 0644 "$d"/new/usr/lib/sysusers.d/keksbox.conf /usr/lib/sysusers.d/keksbox.conf
install -m 0644 "$d"/new/usr/share/doc/keksbox/default.toml /usr/share/doc/keksbox/default.toml
systemd-sysusers
systemctl daemon-reload
systemctl restart keksbox.service
# Type=notify: active means it is listening again with the same certificate.
if ! systemctl is-active --quiet keksbox.service; then
    echo "update: the new keksbox did not start; putting the previous one back" >&2
    journalctl -u keksbox.service -n 20 --no-pager >&2 || true
    mv -f /usr/bin/keksbox.previous /usr/bin/keksbox
    systemctl restart keksbox.service
    exit 1
fi
rm -rf "$d"
echo "update: $(/usr/bin/keksbox --version) is running; config and certificate kept"
EOF
