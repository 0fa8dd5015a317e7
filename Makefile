# keksbox: the two commands a newcomer runs are `make run` and `make test` (see README.md).
# Everything they need is installed here, so a fresh Debian machine and CI behave the same.

SHELL := /bin/bash
CARGO ?= cargo
NPM ?= npm
KEKSBOX_DEBUG := target/debug/keksbox
# Debian packages the tests need. Installed only when something is missing and we are root.
APT_PACKAGES := chromium iproute2 util-linux file openssl systemd
APT_STAMP := target/.apt-packages

.PHONY: run test bench web web-deps deps test-rust test-web clippy fmt fuzz clean

## Build what is needed and start the appliance on its embedded default config.
run: web
	$(CARGO) build -p keksbox
	@echo "keksbox: open http://127.0.0.1:8080/ (Ctrl-C stops it)"
	$(KEKSBOX_DEBUG)

## Install what the tests need, then run every test.
test: deps web
	$(CARGO) build --workspace --all-targets
	$(MAKE) test-rust
	$(MAKE) test-web

test-rust:
	$(CARGO) test --workspace

test-web:
	KEKSBOX_BIN=$(CURDIR)/$(KEKSBOX_DEBUG) $(NPM) --prefix web test

## The web client: npm dependencies from the lockfile, then the bundle in web/dist.
web: web-deps
	$(NPM) --prefix web run build

web-deps: web/node_modules/.package-lock.json

web/node_modules/.package-lock.json: web/package.json web/package-lock.json
	$(NPM) --prefix web ci --no-audit --no-fund
	@touch $@

deps: $(APT_STAMP)

$(APT_STAMP):
	@mkdir -p target
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else echo "missing Debian packages:$$missing (run as root or: sudo apt-get install$$missing)"; exit 1; fi; \
	fi
	@touch $@

## Figures: relay throughput and latency, memory per connection, bundle size.
bench: web
	$(CARGO) build --release -p keksbox -p keksbox-bench
	target/release/keksbox-load --server target/release/keksbox

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf web/dist web/node_modules
