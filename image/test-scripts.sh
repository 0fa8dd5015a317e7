#!/bin/bash
# Tests of the image's boot-time scripts on the build machine (no emulation, a few seconds):
# the parsers of wifi.txt and ssh-authorized-keys.txt, good and bad, and the banner's
# fingerprint, port and URLs. Run by make test; the boot test (make image-test) runs them on
# the image.
#
# Usage: image/test-scripts.sh [KEKSBOX_BIN]   (a host keksbox, for a real certificate)
set -uo pipefail
here=$(dirname "$(readlink -f "$0")")
keksbox=${1:-$here/../target/debug/keksbox}
. "$here/lib.sh"
need_tools openssl:openssl wpa_passphrase:wpasupplicant qrencode:qrencode od:coreutils

passed=0
failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*" >&2; }
check() { # check NAME COMMAND...: the command must succeed
    local name=$1; shift
    if "$@"; then ok; else bad "$name"; fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export KEKSBOX_BOOT=$tmp/boot KEKSBOX_RUN=$tmp/run KEKSBOX_STATE=$tmp/state KEKSBOX_CONFIG=$tmp/keksbox.toml
# shellcheck source=overlay/usr/lib/keksbox-image/bootfiles
. "$here/overlay/usr/lib/keksbox-image/bootfiles"
# shellcheck source=overlay/usr/lib/keksbox-image/banner
. "$here/overlay/usr/lib/keksbox-image/banner"

# A fresh boot partition and run directory for each case.
fresh() {
    rm -rf "$KEKSBOX_BOOT" "$KEKSBOX_RUN"
    mkdir -p "$KEKSBOX_BOOT" "$KEKSBOX_RUN"
    : > "$KEKSBOX_RUN/notes"
}
notes_have() { grep -q -- "$1" "$KEKSBOX_RUN/notes"; }
hex() { printf %s "$1" | od -An -v -tx1 | tr -d ' \n'; }
# WPA-PSK computed independently of wpa_passphrase: PBKDF2-HMAC-SHA1, 4096 rounds, SSID as salt.
wpa_psk() {
    openssl kdf -keylen 32 -kdfopt digest:SHA1 -kdfopt "pass:$1" -kdfopt "salt:$2" -kdfopt iter:4096 PBKDF2 |
        tr -d ':\n' | tr 'A-F' 'a-f'
}

key1="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsW3kH0vW0Pz6v7a1xY8yQ1vS5bq2Jr5qQ8p3dC4e5f alice@laptop"
key2="ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY= bob"

# --- ssh-authorized-keys.txt ---
fresh
check "no ssh file: SSH off" eval '! ssh_keys'
check "no ssh file: no keys file" test ! -e "$KEKSBOX_RUN/authorized_keys"
check "no ssh file: nothing reported" test ! -s "$KEKSBOX_RUN/notes"

fresh
printf '# my keys\r\n%s\r\n\r\nnot a key at all\r\n%s' "$key1" "$key2" > "$KEKSBOX_BOOT/ssh-authorized-keys.txt"
check "keys with CRLF, a comment and junk: SSH on" ssh_keys
check "keys: exactly the two keys, CR removed" test "$(cat "$KEKSBOX_RUN/authorized_keys")" = "$key1
$key2"
check "keys: the junk line is reported by number" notes_have "line 4: not a public key"
check "keys: the keys file is private" test "$(stat -c %a "$KEKSBOX_RUN/authorized_keys")" = 600

fresh
printf 'ssh-ed25519\nPasswordAuthentication yes\nssh-ed25519 AAAA;rm -rf /\n' > "$KEKSBOX_BOOT/ssh-authorized-keys.txt"
check "only junk: SSH off" eval '! ssh_keys'
check "only junk: no keys file" test ! -e "$KEKSBOX_RUN/authorized_keys"
check "only junk: reported" notes_have "no public key in it; SSH stays off"

fresh
head -c 70000 /dev/zero | tr '\0' 'a' > "$KEKSBOX_BOOT/ssh-authorized-keys.txt"
check "huge file: SSH off" eval '! ssh_keys'
check "huge file: reported" notes_have "too large"

fresh
printf '%s\n' "$key1" > "$tmp/elsewhere"
ln -s "$tmp/elsewhere" "$KEKSBOX_BOOT/ssh-authorized-keys.txt"
check "a symlink is not followed" eval '! ssh_keys'

# --- wifi.txt ---
fresh
check "no wifi file: Wi-Fi off, silently" eval '! wifi_conf && test ! -s "$KEKSBOX_RUN/notes"'

fresh
printf '# home\r\nssid=My Net\r\npsk=correct horse battery\r\ncountry=DE\r\n' > "$KEKSBOX_BOOT/wifi.txt"
check "wifi with CRLF: usable" wifi_conf
conf=$KEKSBOX_RUN/wpa_supplicant.conf
check "wifi: SSID as hex" grep -qx "	ssid=$(hex 'My Net')" "$conf"
check "wifi: the PSK is PBKDF2 of the passphrase" grep -qx "	psk=$(wpa_psk 'correct horse battery' 'My Net')" "$conf"
check "wifi: no passphrase in the file" eval '! grep -q horse "$conf"'
check "wifi: country" grep -qx "country=DE" "$conf"
check "wifi: private" test "$(stat -c %a "$conf")" = 600

fresh
printf 'ssid=Cafe\n' > "$KEKSBOX_BOOT/wifi.txt"
check "open network: usable" wifi_conf
check "open network: key_mgmt=NONE" grep -qx "	key_mgmt=NONE" "$KEKSBOX_RUN/wpa_supplicant.conf"

fresh
psk64=$(printf 'ab%.0s' $(seq 32))
printf 'ssid=x\npsk=%s\n' "$psk64" > "$KEKSBOX_BOOT/wifi.txt"
check "64 hex digits are the PSK itself" eval 'wifi_conf && grep -qx "	psk=$psk64" "$KEKSBOX_RUN/wpa_supplicant.conf"'

fresh
printf 'ssid=x\njust some words\npsk=12345678\n' > "$KEKSBOX_BOOT/wifi.txt"
check "a line without = is refused" eval '! wifi_conf && notes_have "line 2: expected key=value"'

fresh
printf 'ssid=a"b}c\npsk=12345678\n' > "$KEKSBOX_BOOT/wifi.txt"
check "quotes and braces in the SSID stay inside the hex" eval 'wifi_conf && ! grep -q "a\"b" "$KEKSBOX_RUN/wpa_supplicant.conf" && test "$(grep -c "}" "$KEKSBOX_RUN/wpa_supplicant.conf")" = 1'

fresh
printf 'ssid=x\npsk=short\n' > "$KEKSBOX_BOOT/wifi.txt"
check "a 5-character passphrase is refused" eval '! wifi_conf && notes_have "8 to 63 printable ASCII" && test ! -e "$KEKSBOX_RUN/wpa_supplicant.conf"'

fresh
printf 'ssid=x\npsk=%s\n' "$(printf 'z%.0s' $(seq 64))" > "$KEKSBOX_BOOT/wifi.txt"
check "a 64-character non-hex passphrase is refused" eval '! wifi_conf && notes_have "8 to 63"'

fresh
printf 'ssid=x\npsk=grüße1234\n' > "$KEKSBOX_BOOT/wifi.txt"
check "a non-ASCII passphrase is refused" eval '! wifi_conf && notes_have "printable ASCII"'

fresh
printf 'ssid=x\npassword=12345678\n' > "$KEKSBOX_BOOT/wifi.txt"
check "an unknown key is named" eval '! wifi_conf && notes_have "unknown key '"'"'password'"'"'"'

fresh
printf 'psk=12345678\n' > "$KEKSBOX_BOOT/wifi.txt"
check "no ssid is refused" eval '! wifi_conf && notes_have "no ssid= line"'

fresh
printf 'ssid=%s\n' "$(printf 'n%.0s' $(seq 33))" > "$KEKSBOX_BOOT/wifi.txt"
check "a 33-byte SSID is refused" eval '! wifi_conf && notes_have "longer than 32 bytes"'

fresh
printf 'ssid=x\ncountry=de\n' > "$KEKSBOX_BOOT/wifi.txt"
check "a lower-case country is refused" eval '! wifi_conf && notes_have "two capital letters"'

# --- the banner ---
printf '[server]\nbind = "0.0.0.0:8443"\n[tls]\nredirect_bind = "0.0.0.0:80"\n' > "$KEKSBOX_CONFIG"
check "port from [server] bind" test "$(https_port)" = 8443
printf '[tls]\nredirect_bind = "0.0.0.0:80"\n[server]\nbind = "[::]:443"\n' > "$KEKSBOX_CONFIG"
check "port from an IPv6 bind, not from [tls]" test "$(https_port)" = 443
cp "$here/../config/appliance.toml" "$KEKSBOX_CONFIG"
check "the shipped config serves 443" test "$(https_port)" = 443
rm -f "$KEKSBOX_CONFIG"
check "no config: 443" test "$(https_port)" = 443

check "URL for 443 has no port" test "$(url 192.0.2.7 443)" = "https://192.0.2.7/"
check "IPv6 URL in brackets" test "$(url 2001:db8::7 8443)" = "https://[2001:db8::7]:8443/"

fresh
rm -rf "$KEKSBOX_STATE"
# Stand-ins for what only the box has (addresses, systemd); the functions above call these.
addresses() { printf '192.0.2.7\n2001:db8::7\n'; }
systemctl() { echo active; }
networkctl() {
    case "$1" in
        list) printf '  1 lo   loopback carrier  unmanaged\n  2 eth0 ether    routable configured\n  3 wlan0 wlan   off      failed\n' ;;
        reconfigure) echo "$2" >> "$tmp/reconfigured" ;;
    esac
}
out=$(render)
check "banner shows each link's state, not loopback" grep -qx "network: eth0 routable configured; wlan0 off failed" <<< "$out"
heal_links 2>/dev/null
check "a failed link is configured again, a working one is left alone" test "$(cat "$tmp/reconfigured")" = wlan0
# A link udev never finished with: its event is replayed at the second pass that sees it.
udevadm() { echo "$*" >> "$tmp/triggered"; }
networkctl() {
    case "$1" in
        list) printf '  1 lo   loopback carrier  unmanaged\n  2 eth0 ether    off      pending\n' ;;
    esac
}
heal_links 2>/dev/null
check "a pending link is left alone at the first pass" test ! -e "$tmp/triggered"
heal_links 2>/dev/null
check "a link still pending at the next pass gets its udev event again" \
    test "$(cat "$tmp/triggered")" = "trigger --action=add /sys/class/net/eth0"
check "banner before the certificate exists says so" grep -q "not made yet" <<< "$out"
check "banner lists keksbox.local and each address" eval 'grep -qx "  https://keksbox.local/" <<< "$out" && grep -qx "  https://192.0.2.7/" <<< "$out" && grep -qx "  https://\[2001:db8::7\]/" <<< "$out"'
check "banner shows keksbox's state" grep -qx "keksbox.service: active" <<< "$out"
check "the QR code is for the first address" test "$(qr_url)" = "https://192.0.2.7/"

if [ -x "$keksbox" ]; then
    # The fingerprint keksbox prints for its own certificate is the one the banner shows.
    said=$("$keksbox" regenerate-cert --state-dir "$KEKSBOX_STATE" 2>/dev/null | sed -n 's/.*SHA-256 \([0-9A-F:]*\).*/\1/p')
    check "keksbox made a certificate" test -n "$said"
    check "banner fingerprint = keksbox's" test "$(fingerprint 443)" = "$said"
    out=$(render)
    check "banner shows it on two lines" eval 'grep -qx "  ${said:0:47}" <<< "$out" && grep -qx "  ${said:48}" <<< "$out"'
    echo "ok" > "$KEKSBOX_RUN/notes"
    echo "wifi.txt: something" > "$KEKSBOX_RUN/notes"
    check "banner carries the boot-file notes" grep -qx "wifi.txt: something" <<< "$(render)"
else
    bad "no host keksbox at $keksbox (cargo build -p keksbox) for the fingerprint check"
fi
mkdir -p "$KEKSBOX_STATE/tls"
echo "not a certificate" > "$KEKSBOX_STATE/tls/cert.pem"
check "a broken certificate file gives no fingerprint, not garbage" test -z "$(fingerprint 1)"

echo "image-scripts: $passed passed, $failed failed"
[ "$failed" = 0 ]
