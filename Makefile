# keksbox: the two commands a newcomer runs are `make run` and `make test` (see README.md).
# Everything they need is installed here, so a fresh Debian machine and CI behave the same.

SHELL := /bin/bash
CARGO ?= cargo
NPM ?= npm
KEKSBOX_DEBUG := target/debug/keksbox
# Debian packages the tests need. Installed only when something is missing and we are root.
APT_PACKAGES := chromium iproute2 util-linux file openssl systemd
# The platform tests: Debian's Rust toolchain with an arm64 std for the static aarch64 build
# (rustup cannot download targets here), the cross linker, and qemu to run the result.
APT_PACKAGES += curl rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu \
	libc6-dev-arm64-cross qemu-user-static binfmt-support
# The image's boot-time scripts, tested by make test (image/test-scripts.sh).
APT_PACKAGES += wpasupplicant qrencode
# Peer daemon devices (issue 8): ALSA capture links libasound; v4l's bindings come from bindgen
# (libclang) at build time.
APT_PACKAGES += libasound2-dev libclang-dev
# make vm-test: qemu boots Debian's kernel with a busybox initramfs (cpio, depmod from kmod).
APT_PACKAGES += qemu-system-x86 busybox-static cpio kmod
# keksbox-peer: cmake builds the bundled libopus (opusic-sys).
APT_PACKAGES += cmake
# keksbox-peer for aarch64 (make release-aarch64-peer): the board's libasound to link against
# (arm64 multiarch; Debian has no static libasound) and g++ for openh264's C++.
APT_PACKAGES += libasound2-dev:arm64 g++-aarch64-linux-gnu
APT_STAMP := target/.apt-packages

.PHONY: run test bench web web-deps deps test-rust test-web clippy fmt fuzz clean
.PHONY: release release-aarch64 release-aarch64-peer release-armv7 install install-peer test-platform bench-platform

## Build what is needed and start the appliance on its embedded default config.
run: web
	$(CARGO) build -p keksbox
	@echo "keksbox: open https://127.0.0.1:8443/ (http://127.0.0.1:8080/ redirects there); the browser"
	@echo "keksbox: warns about the self-signed certificate: compare its SHA-256 fingerprint with the log. Ctrl-C stops it."
	$(KEKSBOX_DEBUG)

## Install what the tests need, then run every test.
test: deps web
	$(CARGO) build --workspace --all-targets
	$(MAKE) test-rust
	$(MAKE) test-platform
	$(MAKE) vm-test
	$(MAKE) test-image-scripts
	$(MAKE) test-web

test-rust:
	$(CARGO) test --workspace

test-web:
	KEKSBOX_BIN=$(CURDIR)/$(KEKSBOX_DEBUG) RIFT_BIN=$(CURDIR)/target/debug/rift PEER_BIN=$(CURDIR)/target/debug/keksbox-peer $(NPM) --prefix web test

## The web client: npm dependencies from the lockfile, then the bundle in web/dist.
web: web-deps
	$(NPM) --prefix web run build

web-deps: web/node_modules/.package-lock.json

web/node_modules/.package-lock.json: web/package.json web/package-lock.json
	$(NPM) --prefix web ci --no-audit --no-fund
	@touch $@

deps: $(APT_STAMP)

# The stamp depends on the Makefile, so a changed package list is installed again.
$(APT_STAMP): Makefile
	@mkdir -p target
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    case "$$missing" in *:arm64*) dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64;; esac; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else echo "missing Debian packages:$$missing (run as root or: sudo apt-get install$$missing)"; exit 1; fi; \
	fi
	@touch $@

## Figures: relay throughput, latency and CPU per delivery, memory per connection and under
## attack, bundle size. BASELINE=path/to/older/keksbox prints its relay figures alongside.
bench: web
	$(CARGO) build --release -p keksbox -p keksbox-bench
	target/release/keksbox-load --server target/release/keksbox $(if $(BASELINE),--baseline $(BASELINE))
	@# The browser runs in a network namespace of its own with only loopback, like the tests.
	unshare -n sh -c 'ip link set lo up && KEKSBOX_BIN=$(CURDIR)/target/release/keksbox $(NPM) --prefix web run bench'
	$(MAKE) bench-platform
	@# rift: 500 MB rift to rift through the relay, raw TCP over loopback beside it.
	$(CARGO) build --release -p rift
	unshare -n rift/bench/throughput.sh $(CURDIR)/target/release/keksbox $(CURDIR)/target/release/rift
	@# rift to headless Chromium and back, 100 MB each way.
	unshare -n sh -c 'ip link set lo up && KEKSBOX_BIN=$(CURDIR)/target/release/keksbox RIFT_BIN=$(CURDIR)/target/release/rift node web/test/bench-rift.mjs'
	@# TURN (issue 9): rift A to B through the box's relay (namespaces, client isolation), and
	@# direct (forwarding on) beside it; keksbox CPU per relayed MB.
	appliance/bench/turn.sh $(CURDIR)/target/release/keksbox $(CURDIR)/target/release/rift
	@# Peer daemon devices: RNNoise per 10 ms frame, test pattern and camera format conversion.
	$(CARGO) run --release -q -p keksbox-peer --example devices-bench
	@# Peer daemon media: share of one core for the 640x480@30 camera and the microphone (goal 15%).
	$(CARGO) run --release -q -p keksbox-peer --example pipeline-bench

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf web/dist web/node_modules

## Static release binaries, the web client embedded in each.
# x86_64: rustup's toolchain. +crt-static goes in RUSTFLAGS with --target so it reaches only
# the target's code, not build scripts and proc-macros (see .cargo/config.toml).
RELEASE_X86_64 := target/x86_64-unknown-linux-gnu/release/keksbox
# aarch64: Debian's rustc-web/cargo-web, whose arm64 std rustup cannot download here; a
# separate target dir so the two toolchains never overwrite each other's artifacts.
DEBIAN_CARGO := RUSTC=/usr/bin/rustc CARGO_TARGET_DIR=target/debian /usr/bin/cargo
RELEASE_AARCH64 := target/debian/aarch64-unknown-linux-gnu/release/keksbox
RELEASE_ARMV7 := target/armv7-unknown-linux-musleabihf/release/keksbox

release: web
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release --locked -p keksbox --target x86_64-unknown-linux-gnu
	@file $(RELEASE_X86_64)

release-aarch64: deps web
	$(DEBIAN_CARGO) build --release --locked -p keksbox --target aarch64-unknown-linux-gnu
	@file $(RELEASE_AARCH64)

# keksbox-peer for aarch64, same toolchain and target dir, but dynamically linked: it needs the
# board's libasound.so.2, libstdc++.so.6 (openh264) and glibc (Debian's arm64 libasound2 and
# libstdc++6 on the image). openh264 and libopus are C/C++ built from source by the cross
# compilers (cc, cmake); v4l's bindings come from bindgen with the arm64 kernel headers.
RELEASE_AARCH64_PEER := target/debian/aarch64-unknown-linux-gnu/release/keksbox-peer
# RUSTFLAGS replaces .cargo/config.toml's +crt-static for this build only (a static glibc
# binary cannot load libasound); with --target it does not reach build scripts.
# pkg-config reads the arm64 .pc files; multiarch keeps them in the host's tree, so sysroot /.
# bindgen runs the host's libclang: point it at the arm64 headers, not the host's.
AARCH64_PEER_ENV := RUSTFLAGS="-C target-feature=-crt-static" \
	PKG_CONFIG_ALLOW_CROSS=1 PKG_CONFIG_SYSROOT_DIR=/ \
	PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig \
	CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++ \
	AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
	BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu="--sysroot=/usr/aarch64-linux-gnu -I/usr/aarch64-linux-gnu/include"

release-aarch64-peer: deps
	$(AARCH64_PEER_ENV) $(DEBIAN_CARGO) build --release --locked -p keksbox-peer --target aarch64-unknown-linux-gnu
	@file $(RELEASE_AARCH64_PEER)

# 32-bit ARM needs cross-rs and Docker (Debian's armhf std does not match its compiler).
release-armv7: web
	CROSS_CONFIG=cross.toml cross build --release --locked -p keksbox --target armv7-unknown-linux-musleabihf
	@file $(RELEASE_ARMV7)

## Install binary, units, sysusers file and config under PREFIX (DESTDIR respected), for a
## package or the image recipe: make install DESTDIR=rootfs PREFIX=/usr KEKSBOX_BIN=...
PREFIX ?= /usr/local
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
KEKSBOX_BIN ?= $(RELEASE_X86_64)
# keksbox-peer from the same build (architecture and target dir) as KEKSBOX_BIN.
KEKSBOX_PEER_BIN ?= $(dir $(KEKSBOX_BIN))keksbox-peer

install:
	@test -f "$(KEKSBOX_BIN)" || { echo "$(KEKSBOX_BIN) missing: run make release (or make release-aarch64 and set KEKSBOX_BIN=$(RELEASE_AARCH64))"; exit 1; }
	install -D -m 0755 "$(KEKSBOX_BIN)" "$(DESTDIR)$(PREFIX)/bin/keksbox"
	install -d "$(DESTDIR)$(UNITDIR)"
	sed -e 's|/usr/bin/keksbox|$(PREFIX)/bin/keksbox|' -e 's|/etc/keksbox/|$(SYSCONFDIR)/keksbox/|' \
		systemd/keksbox.service > "$(DESTDIR)$(UNITDIR)/keksbox.service"
	install -m 0644 systemd/keksbox.socket "$(DESTDIR)$(UNITDIR)/keksbox.socket"
	install -D -m 0644 systemd/keksbox.sysusers "$(DESTDIR)$(SYSUSERSDIR)/keksbox.conf"
	install -D -m 0644 config/default.toml "$(DESTDIR)$(PREFIX)/share/doc/keksbox/default.toml"
	@# An existing config is the owner's: never overwrite it.
	test -e "$(DESTDIR)$(SYSCONFDIR)/keksbox/keksbox.toml" || \
		install -D -m 0644 config/appliance.toml "$(DESTDIR)$(SYSCONFDIR)/keksbox/keksbox.toml"
	@# keksbox-peer only when it was built: a box without a camera installs keksbox alone.
	@if [ -f "$(KEKSBOX_PEER_BIN)" ]; then $(MAKE) --no-print-directory install-peer; \
	else echo "install: $(KEKSBOX_PEER_BIN) not built, keksbox-peer not installed (make release-aarch64-peer, or set KEKSBOX_PEER_BIN)"; fi

## keksbox-peer (dynamically linked: the board needs libasound2 and libstdc++6), its unit,
## its sysusers file and /etc/keksbox/peer.toml. `make install` calls it when the binary exists.
install-peer:
	@test -f "$(KEKSBOX_PEER_BIN)" || { echo "$(KEKSBOX_PEER_BIN) missing: run make release-aarch64-peer (or set KEKSBOX_PEER_BIN)"; exit 1; }
	install -D -m 0755 "$(KEKSBOX_PEER_BIN)" "$(DESTDIR)$(PREFIX)/bin/keksbox-peer"
	install -d "$(DESTDIR)$(UNITDIR)"
	sed -e 's|/usr/bin/keksbox-peer|$(PREFIX)/bin/keksbox-peer|' -e 's|/etc/keksbox/|$(SYSCONFDIR)/keksbox/|' \
		systemd/keksbox-peer.service > "$(DESTDIR)$(UNITDIR)/keksbox-peer.service"
	install -D -m 0644 systemd/keksbox-peer.sysusers "$(DESTDIR)$(SYSUSERSDIR)/keksbox-peer.conf"
	@# The owner's config, never overwritten. It holds no secret (LoadCredential= reads
	@# /etc/keksbox/peer-secret, which the owner creates, mode 0600).
	test -e "$(DESTDIR)$(SYSCONFDIR)/keksbox/peer.toml" || \
		install -D -m 0644 config/peer.toml "$(DESTDIR)$(SYSCONFDIR)/keksbox/peer.toml"

## Unit files (hardening, verify, sysusers), the static aarch64 binary under qemu with TLS,
## the aarch64 keksbox-peer under qemu in a room on keksbox, and the install layout. The mDNS
## namespace test is a cargo test (appliance/tests/mdns.rs).
test-platform: release-aarch64 release-aarch64-peer
	$(CARGO) build -p keksbox
	appliance/tests/platform.sh systemd
	appliance/tests/platform.sh smoke $(RELEASE_AARCH64) qemu-aarch64-static
	appliance/tests/platform.sh install $(RELEASE_AARCH64)
	@# keksbox-peer for aarch64 (dynamic) under qemu with the arm64 glibc and libasound of the
	@# host's multiarch tree (-L /), as on the board; the cross toolchain's own glibc
	@# (-L /usr/aarch64-linux-gnu) hangs qemu when the first thread starts. About 20 s.
	peer-daemon/tests/platform.sh smoke $(RELEASE_AARCH64_PEER) "qemu-aarch64-static -L /" $(KEKSBOX_DEBUG)
	peer-daemon/tests/platform.sh install $(RELEASE_AARCH64) $(RELEASE_AARCH64_PEER)

## Static binary sizes and idle memory.
bench-platform: release release-aarch64
	appliance/tests/platform.sh figures $(RELEASE_X86_64) $(RELEASE_AARCH64)

## The Raspberry Pi image (image/, docs/IMAGE.md), as root: make image, then make image-test.
## The Debian tree is cached in target/image/rootfs.tar (about 20 minutes under emulation);
## it is made again when image/stage or the package list changes (or when deleted).
IMAGE_DIR := target/image
IMAGE_ROOTFS := $(IMAGE_DIR)/rootfs.tar
IMAGE_RAW := $(IMAGE_DIR)/keksbox-arm64.img
IMAGE_XZ := $(IMAGE_RAW).xz
# Included when it has been built (make release-aarch64 builds keksbox only).
PEER_AARCH64 := target/debian/aarch64-unknown-linux-gnu/release/keksbox-peer
IMAGE_APT_PACKAGES := mmdebstrap arch-test qemu-user-static binfmt-support qemu-system-arm \
	qemu-utils dosfstools mtools fdisk e2fsprogs xz-utils file curl openssl openssh-client zbar-tools
IMAGE_INPUTS := image/assemble.sh image/lib.sh $(shell find image/overlay image/boot -type f 2>/dev/null) \
	systemd/keksbox.service systemd/keksbox.socket systemd/keksbox.sysusers config/appliance.toml \
	systemd/keksbox-peer.service systemd/keksbox-peer.sysusers config/peer.toml $(wildcard $(PEER_AARCH64))

.PHONY: image image-test image-deps test-image-scripts

image: image-deps release-aarch64
	$(MAKE) $(IMAGE_XZ)

## Boots the image under qemu-system-aarch64: the boot test (two boots, HTTPS forwarded) and
## the SSH and update phase (two boots, SSH forwarded too). The .xz is made (again) first
## when the image changed, so the image tested is the one people flash (test.sh compares them).
image-test: image-deps release-aarch64
	$(MAKE) $(IMAGE_XZ)
	KEKSBOX_PEER_BIN=$(PEER_AARCH64) image/test.sh $(IMAGE_RAW)

test-image-scripts: deps
	$(CARGO) build -p keksbox
	image/test-scripts.sh $(KEKSBOX_DEBUG)

image-deps:
	@missing=""; for p in $(IMAGE_APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  else echo "the image build needs root and these Debian packages:$$missing"; exit 1; fi; \
	fi

$(IMAGE_ROOTFS): image/build-rootfs.sh image/lib.sh $(wildcard image/stage/*)
	image/build-rootfs.sh $@

$(IMAGE_RAW): $(IMAGE_ROOTFS) $(RELEASE_AARCH64) $(IMAGE_INPUTS)
	KEKSBOX_PEER_BIN=$(PEER_AARCH64) image/assemble.sh $(IMAGE_ROOTFS) $(RELEASE_AARCH64) $@

# Raspberry Pi Imager and dd both take .img.xz; SHA256SUMS for both forms. -3: -6 had not
# finished after 8 minutes here on two busy cores.
IMAGE_XZ_FLAGS ?= -T2 -3
$(IMAGE_XZ): $(IMAGE_RAW)
	xz $(IMAGE_XZ_FLAGS) -k -f $<
	cd $(IMAGE_DIR) && sha256sum $(notdir $(IMAGE_XZ)) $(notdir $(IMAGE_RAW)) > SHA256SUMS
	@ls -l $(IMAGE_XZ) $(IMAGE_RAW)

## Real V4L2 and ALSA drivers: a qemu VM (about a minute) with vivid and snd-aloop runs the
## peer daemon's device check (peer-daemon/examples/vm-devices.rs); no network card in the VM.
.PHONY: vm-test
vm-test: deps
	$(CARGO) build -p keksbox-peer --example vm-devices
	peer-daemon/vm/run.sh target/debug/examples/vm-devices
