#!/bin/bash
# The image's boot test (make image-test). Boots the card image under qemu-system-aarch64
# -M virt (software emulation) with the kernel, initramfs and cmdline.txt from its own boot
# partition, on a copy-on-write overlay larger than the image (so the first boot has a
# partition to grow). Two phases, each with its own boots:
#
# Phase 1, the boot test: two boots, the VM's HTTPS port the only one forwarded.
#   - systemd reaches multi-user.target, the root partition was grown (first boot only),
#   - keksbox.service is active (the banner's status line) and the banner shows a fingerprint
#     and the DHCP address,
#   - the start page answers over HTTPS through a qemu hostfwd to loopback, with a certificate
#     whose SHA-256 fingerprint is the one the console printed (curl verifies it against that
#     certificate for the name keksbox.local),
#   - after pulling the plug, the second boot shows and serves the same fingerprint; the QR
#     code on the VM's screen (tty1 on virtio-gpu) decodes to the banner's URL; keksbox.txt
#     on the card shows the fingerprint.
# Phase 2, SSH and updates: two more boots with SSH forwarded beside HTTPS.
#   - with ssh-authorized-keys.txt on the boot partition, root gets in with that key; the
#     system is running, keksbox-clock works, keksbox-peer (when in the image) runs and its
#     unit verifies and is disabled;
#   - image/update.sh replaces keksbox and keksbox-peer over SSH with binaries that differ
#     from the image's: the box then runs exactly those, keeps the old ones as .previous,
#     and keeps its state (/var/lib/keksbox, the served fingerprint) and config
#     (keksbox.toml, peer.toml);
#   - with the key file taken off the card, the updated box boots, serves the same
#     fingerprint, and nothing answers on the SSH port (sshd is not started).
# Prints the image's size, the boot-to-ready times and each phase's duration.
#
# Nothing leaves the VM but the forwarded ports (phase 1: HTTPS only; phase 2: HTTPS and
# SSH): user networking with restrict=on, inside a network namespace of its own that has
# only loopback (the test re-runs itself in one). qemu's monitor (for pictures of the screen
# and the power button) listens on that namespace's loopback; it is qemu's, not the VM's.
#
# Usage: image/test.sh IMAGE.img    (as root)
#   KEKSBOX_BIN, KEKSBOX_PEER_BIN: the aarch64 builds image/update.sh sends in phase 2
#   (default: make release-aarch64's keksbox; the peer only when KEKSBOX_PEER_BIN names a file).
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
. "$here/lib.sh"

img=$(readlink -f "${1:?usage: test.sh IMAGE.img}")
[ -f "$img" ] || die "$img missing: make image builds it"
need_root "the boot test"
need_tools qemu-system-aarch64:qemu-system-arm mcopy:mtools mtype:mtools mdel:mtools sfdisk:fdisk \
    curl:curl openssl:openssl unshare:util-linux ssh:openssh-client ssh-keygen:openssh-client \
    zbarimg:zbar-tools xz:xz-utils cmp:diffutils file:file

if [ -z "${KEKSBOX_IMAGE_TEST_NS:-}" ]; then
    exec env KEKSBOX_IMAGE_TEST_NS=1 unshare -n "$0" "$@"
fi
ip link set lo up

# Each boot gets this long to be ready (TCG on a busy 2-core machine is slow).
BOOT_TIMEOUT=${BOOT_TIMEOUT:-600}
PORT=8443
SSH_PORT=2222
# qemu's monitor: pictures of the screen (tty1), and the power button after a failure.
MONITOR_PORT=4444

work=$(mktemp -d "$(dirname "$img")/image-test.XXXXXX")
qemu_pid=""
cleanup() {
    [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null && wait "$qemu_pid" 2>/dev/null
    if [ -n "${KEEP:-}" ]; then echo "image-test: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

fail() {
    echo "image-test: FAIL: $*" >&2
    [ -n "$qemu_pid" ] && screendump "$work/fail.ppm" && echo "image-test: the screen is in $work/fail.ppm (KEEP=1 keeps it)" >&2
    for log in "$work"/boot*.log; do
        [ -f "$log" ] || continue
        echo "----- last lines of $log -----" >&2
        tail -n 60 "$log" | tr -d '\r' >&2
    done
    guest_journal >&2
    exit 1
}

# After a failure: what the box's own journal says about its network, devices and units,
# read from its disk. The VM gets the power button first (logind powers off, journald
# writes everything out), so a boot without network can still be looked into.
guest_journal() {
    [ -n "$qemu_pid" ] || return 0
    if exec 3<>"/dev/tcp/127.0.0.1/$MONITOR_PORT"; then
        echo system_powerdown >&3
        exec 3>&-
        for _ in $(seq 180); do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 1; done
    fi
    kill "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
    qemu_pid=""
    local start="" size=""
    read -r start size < <(sfdisk --dump "$work/disk.img" |
        sed -n 's/.*start= *\([0-9]*\), size= *\([0-9]*\), type=83.*/\1 \2/p') || true
    [ -n "$size" ] || return 0
    dd if="$work/disk.img" of="$work/root.img" bs=1M iflag=skip_bytes,count_bytes \
        skip=$((start * 512)) count=$((size * 512)) conv=sparse status=none || return 0
    debugfs -R "rdump /var/log/journal $work" "$work/root.img" >/dev/null 2>&1 || true
    rm -f "$work/root.img"
    [ -d "$work/journal" ] || { echo "image-test: no journal on the box's disk"; return 0; }
    echo "----- the box's journal, last boot: network, udev, failed units (all of it: KEEP=1, $work/journal) -----"
    journalctl -D "$work/journal" -b 0 -o short-monotonic --no-pager 2>/dev/null |
        grep -E 'systemd-networkd|systemd-udevd|eth0|virtio|DHCP|[Ff]ailed|[Tt]imed out|keksbox' | tail -n 120 || true
}

# The boot partition's offset, from the image's own partition table.
boot_offset=$(sfdisk --dump "$img" | sed -n 's/.*start= *\([0-9]*\),.*type=c.*/\1/p' | head -1)
[ -n "$boot_offset" ] || fail "no FAT (type c) partition in $img"
fat="$img@@$((boot_offset * 512))"
kernel=$(mdir -b -i "$fat" :: | sed -n 's|^::/||; /^vmlinuz-/p' | head -1)
initrd=$(mdir -b -i "$fat" :: | sed -n 's|^::/||; /^initrd.img-/p' | head -1)
[ -n "$kernel" ] && [ -n "$initrd" ] || fail "no vmlinuz-*/initrd.img-* on the boot partition"
mcopy -n -i "$fat" "::$kernel" "::$initrd" ::cmdline.txt "$work/"
# The Pi's command line with the Pi's consoles swapped for the virt board's serial port, and
# systemd's status lines on (quiet hides them; the test reads "Reached target").
cmdline=$(tr -d '\r\n' < "$work/cmdline.txt" | sed 's/console=[^ ]*//g')
cmdline="$cmdline console=ttyAMA0 systemd.show_status=1"
echo "image-test: kernel $kernel, initramfs $initrd, cmdline: $cmdline"

# The test writes to a copy; the image stays as built. 1 GiB more than the image: the first
# boot grows the root partition into it. (A sparse copy: fast, and small on disk.)
cp --sparse=always "$img" "$work/disk.img"
truncate -s "+1G" "$work/disk.img"
disk_fat="$work/disk.img@@$((boot_offset * 512))"
# An SSH key for root, put on the boot partition before phase 2.
ssh-keygen -q -t ed25519 -N "" -C image-test -f "$work/id_ed25519"
ssh_opts=(-p "$SSH_PORT" -i "$work/id_ed25519" -o IdentitiesOnly=yes -o BatchMode=yes
    -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=30)

# A picture of the VM's screen (tty1 on virtio-gpu: what an HDMI screen shows), as PPM.
screendump() {
    local out=$1
    exec 3<>"/dev/tcp/127.0.0.1/$MONITOR_PORT" || return 1
    echo "screendump $out" >&3
    for _ in $(seq 20); do [ -s "$out" ] && break; sleep 1; done
    exec 3>&-
    [ -s "$out" ]
}

# Boots once; leaves the serial log in $work/boot$1.log and qemu running. $2 is the phase's
# forwards: "https" (phase 1) or "https ssh" (phase 2).
boot() {
    local n=$1 fwd="hostfwd=tcp:127.0.0.1:$PORT-:443"
    [[ " $2 " == *" ssh "* ]] && fwd="$fwd,hostfwd=tcp:127.0.0.1:$SSH_PORT-:22"
    qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1024 -no-reboot \
        -kernel "$work/$kernel" -initrd "$work/$initrd" -append "$cmdline" \
        -drive "file=$work/disk.img,format=raw,if=virtio" \
        -nic "user,model=virtio-net-pci,restrict=on,$fwd" \
        -device virtio-rng-pci \
        -device virtio-gpu-pci -display none \
        -monitor "tcp:127.0.0.1:$MONITOR_PORT,server=on,wait=off" \
        -serial "file:$work/boot$n.log" </dev/null >"$work/qemu$n.out" 2>&1 &
    qemu_pid=$!
    boot_start=$(date +%s)
    echo "image-test: boot $n: forwarded to the VM: ${fwd//hostfwd=tcp:/}"
}

# Waits until the serial log has a line matching $2, or fails.
wait_log() {
    local n=$1 pattern=$2 what=$3
    while ! tr -d '\r' 2>/dev/null < "$work/boot$n.log" | grep -q -- "$pattern"; do
        kill -0 "$qemu_pid" 2>/dev/null || fail "boot $n: qemu exited before $what ($(cat "$work/qemu$n.out"))"
        [ $(($(date +%s) - boot_start)) -lt "$BOOT_TIMEOUT" ] || fail "boot $n: no $what within $BOOT_TIMEOUT s"
        sleep 2
    done
}

# The last banner on the serial console (between its markers), after "keksbox.service: active".
banner() {
    tr -d '\r' < "$work/boot$1.log" | awk '/^===== keksbox =====$/ {b=""; on=1; next} /^===== end =====$/ {on=0; last=b} on {b=b $0 "\n"} END {printf "%s", last}'
}

# The fingerprint in the banner: the two lines after "SHA-256 fingerprint:", joined.
banner_fingerprint() {
    banner "$1" | awk '/^SHA-256 fingerprint:$/ {getline a; getline b; gsub(/ /, "", a); gsub(/ /, "", b); print a ":" b}'
}

# Checks one boot; sets ready_secs and fp.
check_boot() {
    local n=$1
    wait_log "$n" "Reached target.*[Mm]ulti-[Uu]ser" "multi-user.target"
    echo "image-test: boot $n: multi-user.target reached after $(($(date +%s) - boot_start)) s"
    # The banner redraws when keksbox's state changes: wait for one that says it is active.
    while ! banner "$n" | grep -qx 'keksbox.service: active'; do
        kill -0 "$qemu_pid" 2>/dev/null || fail "boot $n: qemu exited before keksbox was active"
        [ $(($(date +%s) - boot_start)) -lt "$BOOT_TIMEOUT" ] || fail "boot $n: the banner never said keksbox.service: active"
        sleep 2
    done
    fp=$(banner_fingerprint "$n")
    [[ "$fp" =~ ^([0-9A-F]{2}:){31}[0-9A-F]{2}$ ]] || fail "boot $n: no fingerprint in the banner: $(banner "$n")"
    echo "image-test: boot $n: the console says keksbox.service active, fingerprint $fp"
    # The DHCP lease: qemu's user network hands the VM 10.0.2.15, where hostfwd forwards to.
    # The banner's network line says what networkd is doing with the link if it never comes.
    while ! banner "$n" | grep -q '^  https://10\.0\.2\.15[:/]'; do
        kill -0 "$qemu_pid" 2>/dev/null || fail "boot $n: qemu exited before the DHCP lease"
        [ $(($(date +%s) - boot_start)) -lt "$BOOT_TIMEOUT" ] ||
            fail "boot $n: no DHCP lease (10.0.2.15) within $BOOT_TIMEOUT s; the console says: $(banner "$n" | grep '^network:')"
        sleep 2
    done
    echo "image-test: boot $n: the console shows the DHCP address 10.0.2.15 after $(($(date +%s) - boot_start)) s ($(banner "$n" | grep '^network:'))"

    # The start page over HTTPS, through the forwarded port. The certificate is fetched,
    # compared with the console's fingerprint, then curl verifies the page's TLS against it
    # for the name the box is reached by.
    local served=""
    while :; do
        served=$(timeout 30 openssl s_client -connect "127.0.0.1:$PORT" -servername keksbox.local </dev/null 2>/dev/null |
            openssl x509 2>/dev/null) && [ -n "$served" ] && break
        [ $(($(date +%s) - boot_start)) -lt "$BOOT_TIMEOUT" ] || fail "boot $n: nothing answers TLS on the forwarded port"
        sleep 2
    done
    ready_secs=$(($(date +%s) - boot_start))
    printf '%s\n' "$served" > "$work/served$n.pem"
    local served_fp
    served_fp=$(openssl x509 -in "$work/served$n.pem" -noout -fingerprint -sha256 | sed 's/.*=//')
    [ "$served_fp" = "$fp" ] || fail "boot $n: the box serves $served_fp but its console says $fp"
    local page
    page=$(curl -sS --fail --max-time 60 --cacert "$work/served$n.pem" \
        --resolve "keksbox.local:$PORT:127.0.0.1" "https://keksbox.local:$PORT/") ||
        fail "boot $n: the start page did not answer over HTTPS"
    grep -q '<title>keksbox' <<< "$page" || fail "boot $n: the start page is not keksbox's: ${page:0:200}"
    echo "image-test: boot $n: https://keksbox.local/ answered (${#page} bytes) with that certificate, ready after $ready_secs s"
}

# Pulls the plug: no clean shutdown, as when someone unplugs the box.
power_off() {
    kill "$qemu_pid"
    wait "$qemu_pid" 2>/dev/null || true
    qemu_pid=""
}

# The first bytes sshd sends on the forwarded SSH port ("SSH-" when it listens). qemu accepts
# on loopback either way and closes when the VM refuses, so nothing read means no sshd.
ssh_greeting() {
    timeout 15 bash -c "exec 3<>/dev/tcp/127.0.0.1/$SSH_PORT && head -c 4 <&3" 2>/dev/null || true
}
remote() { ssh "${ssh_opts[@]}" root@127.0.0.1 "$@"; }

test_start=$(date +%s)
echo "image-test: ===== phase 1: the boot test (two boots, only HTTPS forwarded) ====="
echo "image-test: boot 1 (first boot: grows the root partition, makes the certificate)"
boot 1 https
check_boot 1
ready1=$ready_secs
fp1=$fp
grep -q "keksbox-firstboot: root partition .* grown" <(tr -d '\r' < "$work/boot1.log") ||
    fail "boot 1: the root partition was not grown"
tr -d '\r' < "$work/boot1.log" | grep -o "keksbox-firstboot: root partition .*" | head -1 | sed 's/^/image-test: boot 1: /'
# keksbox.txt on the boot partition is written after the console banner; give it a moment
# to reach the disk before the plug is pulled (the FAT write is synced).
sleep 5
power_off

echo "image-test: boot 2 (after pulling the plug)"
boot 2 https
check_boot 2
ready2=$ready_secs
[ "$fp" = "$fp1" ] || fail "the fingerprint changed across a reboot: $fp1 then $fp"
echo "image-test: boot 2: same fingerprint as boot 1"
if tr -d '\r' < "$work/boot2.log" | grep -q "keksbox-firstboot: root partition"; then
    fail "boot 2: the root partition was grown again"
fi
# What an HDMI screen would show: tty1 on the VM's display (virtio-gpu), as a PPM picture.
# A phone pointed at that screen: the QR code must read as the banner's first address URL.
screendump "$work/tty1.ppm" || fail "no picture of the screen (qemu's screendump did not answer)"
cp "$work/tty1.ppm" "$(dirname "$img")/tty1.ppm"
qr_want=$(banner 2 | sed -n 's/^  \(https:\/\/[0-9][^ ]*\)$/\1/p' | head -1)
qr_got=$(zbarimg -q --raw "$work/tty1.ppm" 2>/dev/null) || fail "no QR code readable on the screen ($(dirname "$img")/tty1.ppm)"
[ -n "$qr_want" ] && [ "$qr_got" = "$qr_want" ] || fail "the screen's QR code reads '$qr_got', the banner's address URL is '$qr_want'"
echo "image-test: boot 2: the QR code on the screen (tty1) reads $qr_got; picture in $(dirname "$img")/tty1.ppm"
sleep 5
power_off

# keksbox.txt on the boot partition: what a person reads by putting the card in a laptop.
mtype -i "$disk_fat" ::keksbox.txt > "$work/keksbox.txt" ||
    fail "no keksbox.txt on the boot partition after two boots"
grep -q "${fp:0:47}" "$work/keksbox.txt" && grep -q "${fp:48}" "$work/keksbox.txt" ||
    fail "keksbox.txt does not show the fingerprint: $(cat "$work/keksbox.txt")"
echo "image-test: keksbox.txt on the boot partition shows the same fingerprint"
phase1_secs=$(($(date +%s) - test_start))
echo "image-test: phase 1 passed in $phase1_secs s"

phase2_start=$(date +%s)
echo "image-test: ===== phase 2: SSH and updates (two more boots, SSH forwarded beside HTTPS) ====="
# What a person does with the card in a laptop: put their key on the boot partition.
cp "$work/id_ed25519.pub" "$work/ssh-authorized-keys.txt"
mcopy -i "$disk_fat" "$work/ssh-authorized-keys.txt" ::ssh-authorized-keys.txt

echo "image-test: boot 3 (with an SSH key on the boot partition)"
boot 3 "https ssh"
check_boot 3
ready3=$ready_secs
[ "$fp" = "$fp1" ] || fail "boot 3: the fingerprint changed: $fp1 then $fp"
for _ in $(seq 30); do [ "$(ssh_greeting)" = SSH- ] && break; sleep 2; done
[ "$(ssh_greeting)" = SSH- ] || fail "boot 3: sshd does not answer on the forwarded port although the card has a key"
for _ in $(seq 30); do remote true 2>/dev/null && break; sleep 2; done
state=$(remote systemctl is-active keksbox.service) || fail "boot 3: no SSH with the key from the boot partition ($state)"
[ "$state" = active ] || fail "boot 3: keksbox.service is $state"
running=$(remote systemctl is-system-running --wait) ||
    fail "boot 3: the system is $running: $(remote systemctl --failed --no-legend)"
echo "image-test: boot 3: root over SSH with the key: keksbox.service $state, system $running"
# Time without NTP: the hourly save of the clock works as timesyncd's user.
clock=$(remote 'systemctl start keksbox-clock.service && stat -c "%U %Y" /var/lib/systemd/timesync/clock') ||
    fail "boot 3: keksbox-clock.service failed: $clock"
[ "${clock% *}" = systemd-timesync ] && [ "${clock#* }" -ge $(($(date +%s) - 600)) ] ||
    fail "boot 3: the saved clock is '$clock' (want systemd-timesync's, from the last minutes)"
echo "image-test: boot 3: keksbox-clock saved the time for the next boot"
remote systemd-analyze time | head -1 | sed 's/^/image-test: boot 3: /'
# When the link came up and got its lease, in seconds since the kernel started.
remote "journalctl -b -o short-monotonic --no-pager -u systemd-networkd | grep -E 'eth0: (Link UP|Gained carrier|DHCPv4 address)'" |
    sed 's/^/image-test: boot 3: networkd: /' || true
remote systemd-analyze blame | head -5 | sed 's/^ */image-test: boot 3: slowest: /'
remote 'test ! -e /etc/ssh/ssh_host_ed25519_key.pub || ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub' | sed 's/^/image-test: boot 3: host key made on the box: /'

# keksbox-peer: in the image when it was built (make image passes its path), starting with
# the image's own libraries, its unit valid and not enabled (it is off until configured).
peer_bin=${KEKSBOX_PEER_BIN:-}
[ -f "$peer_bin" ] || peer_bin=""
peer_in_image=no
if remote test -e /usr/bin/keksbox-peer; then
    peer_in_image=yes
    peer_version=$(remote keksbox-peer --version) || fail "boot 3: keksbox-peer does not run on the box: $peer_version"
    remote systemd-analyze verify keksbox-peer.service ||
        fail "boot 3: systemd-analyze verify finds fault with keksbox-peer.service"
    peer_enabled=$(remote systemctl is-enabled keksbox-peer.service) || true
    peer_active=$(remote systemctl is-active keksbox-peer.service) || true
    [ "$peer_enabled" = disabled ] && [ "$peer_active" = inactive ] ||
        fail "boot 3: keksbox-peer.service is $peer_enabled and $peer_active (want disabled and inactive)"
    echo "image-test: boot 3: $peer_version runs; its unit verifies and is disabled, inactive"
elif [ -n "$peer_bin" ]; then
    fail "boot 3: $peer_bin was built but the image has no /usr/bin/keksbox-peer"
else
    echo "image-test: boot 3: no keksbox-peer in this image (no aarch64 build of it)"
fi

# The update: the same builds with a marker appended (an ELF file's loader ignores bytes
# after its segments), so the binaries sent differ from the image's and the box can be seen
# to run exactly what was sent. The owner's config gets a line of their own first.
mkdir "$work/update"
keksbox_bin=${KEKSBOX_BIN:-$(dirname "$here")/target/debian/aarch64-unknown-linux-gnu/release/keksbox}
marker="keksbox image-test update $(date +%s%N)"
cp "$keksbox_bin" "$work/update/keksbox"
printf '\n%s\n' "$marker" >> "$work/update/keksbox"
if [ -n "$peer_bin" ]; then
    cp "$peer_bin" "$work/update/keksbox-peer"
    printf '\n%s\n' "$marker" >> "$work/update/keksbox-peer"
fi
sums() { remote "sha256sum $* | cut -d' ' -f1 | tr '\n' ' '"; }
old_sums=$(sums /usr/bin/keksbox ${peer_bin:+/usr/bin/keksbox-peer})
state_before=$(remote 'cd /var/lib/keksbox && find . -type f | sort | xargs sha256sum')
[ -n "$state_before" ] || fail "boot 3: /var/lib/keksbox holds no files"
remote "echo '# $marker' >> /etc/keksbox/keksbox.toml${peer_bin:+ && echo '# $marker' >> /etc/keksbox/peer.toml}"
SSH_OPTS="${ssh_opts[*]}" "$here/update.sh" root@127.0.0.1 "$work/update/keksbox" \
    "${peer_bin:+$work/update/keksbox-peer}" || fail "the update over SSH failed"

# The box runs what was sent, the old binaries are kept, its state and config are untouched.
new_sums=$(sha256sum "$work/update/keksbox" ${peer_bin:+"$work/update/keksbox-peer"} | cut -d' ' -f1 | tr '\n' ' ')
[ "$(sums /usr/bin/keksbox ${peer_bin:+/usr/bin/keksbox-peer})" = "$new_sums" ] ||
    fail "after the update the box's binaries are not the ones sent"
[ "$(sums /usr/bin/keksbox.previous ${peer_bin:+/usr/bin/keksbox-peer.previous})" = "$old_sums" ] ||
    fail "after the update the previous binaries are not kept as .previous"
running_sum=$(remote 'sha256sum /proc/$(systemctl show -p MainPID --value keksbox.service)/exe' | cut -d' ' -f1)
[ "$running_sum" = "${new_sums%% *}" ] || fail "after the update keksbox.service does not run the new binary"
[ "$(remote 'cd /var/lib/keksbox && find . -type f | sort | xargs sha256sum')" = "$state_before" ] ||
    fail "the update changed /var/lib/keksbox"
remote "grep -qx '# $marker' /etc/keksbox/keksbox.toml" || fail "the update lost the owner's keksbox.toml"
after=$(timeout 30 openssl s_client -connect "127.0.0.1:$PORT" -servername keksbox.local </dev/null 2>/dev/null |
    openssl x509 -noout -fingerprint -sha256 | sed 's/.*=//')
[ "$after" = "$fp" ] || fail "after the update the box serves $after instead of $fp"
echo "image-test: boot 3: after the update keksbox.service runs the binary sent, the old one is keksbox.previous, /var/lib/keksbox and keksbox.toml are unchanged, the same fingerprint is served"
if [ -n "$peer_bin" ]; then
    peer_after=$(remote keksbox-peer --version) || fail "after the update keksbox-peer does not run on the box: $peer_after"
    remote "grep -qx '# $marker' /etc/keksbox/peer.toml" || fail "the update lost the owner's peer.toml"
    remote systemd-analyze verify keksbox-peer.service ||
        fail "after the update systemd-analyze verify finds fault with keksbox-peer.service"
    peer_enabled=$(remote systemctl is-enabled keksbox-peer.service) || true
    [ "$peer_enabled" = disabled ] || fail "after the update keksbox-peer.service is $peer_enabled (want it left disabled)"
    echo "image-test: boot 3: after the update /usr/bin/keksbox-peer is the binary sent ($peer_after runs), the old one is keksbox-peer.previous, peer.toml is unchanged, the unit verifies and is still disabled"
elif [ "$peer_in_image" = yes ]; then
    echo "image-test: boot 3: keksbox-peer not updated (no KEKSBOX_PEER_BIN to send)"
fi
remote sync
power_off

# Taking the key file off the card turns SSH off at the next boot.
mdel -i "$disk_fat" ::ssh-authorized-keys.txt
echo "image-test: boot 4 (the updated box, its key file taken off the card)"
boot 4 "https ssh"
check_boot 4
ready4=$ready_secs
[ "$fp" = "$fp1" ] || fail "boot 4: the updated box serves $fp instead of $fp1"
echo "image-test: boot 4: the updated box serves the same fingerprint"
# The network is up (the page answered through the same user network): a silent SSH port
# means no sshd. Asked three times over 10 s, in case a late start were on its way.
for _ in 1 2 3; do
    [ -z "$(ssh_greeting)" ] || fail "boot 4: sshd answers although ssh-authorized-keys.txt was taken off the card"
    sleep 5
done
if remote true 2>/dev/null; then fail "boot 4: SSH let us in without ssh-authorized-keys.txt"; fi
echo "image-test: boot 4: nothing answers on the SSH port without ssh-authorized-keys.txt"
power_off
phase2_secs=$(($(date +%s) - phase2_start))
echo "image-test: phase 2 passed in $phase2_secs s"

# The .xz beside the image must be this image (make image-test makes both from one build).
raw=$(stat -c %s "$img")
xz="${img}.xz"
if [ -f "$xz" ]; then
    xz -dc "$xz" | cmp -s - "$img" || fail "$(basename "$xz") is not the image tested (make image builds both)"
    echo "image-test: $(basename "$xz") decompresses to the image tested"
fi
echo "image-test: PASS"
echo "image-test: image $(basename "$img"): $((raw / 1048576)) MiB raw$([ -f "$xz" ] && echo ", $(($(stat -c %s "$xz") / 1048576)) MiB as $(basename "$xz")")"
echo "image-test: boot to ready (start page over HTTPS) under qemu TCG: boot test $ready1 s (first boot), $ready2 s; SSH phase $ready3 s, $ready4 s"
echo "image-test: phase 1 (boot test) $phase1_secs s, phase 2 (SSH, update) $phase2_secs s, in all $(($(date +%s) - test_start)) s"
