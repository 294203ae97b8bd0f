# Developer and CI entry points. `make test` is the one command that must pass before a
# change lands; CI runs it through `.ci/run`. Steps run in order and stop at the first
# failure; each prints how long it took.

CARGO ?= cargo
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
# Format of bash's `time` keyword, used to time each step.
export TIMEFORMAT := ... %1Rs

NOSTD_DIR := .ci/nostd
NOSTD_BIN := $(NOSTD_DIR)/target/release/lunsnap-nostd-check

# Steps must run one after the other, even under `make -j`.
.NOTPARALLEL:

.PHONY: test tools fmt clippy clippy-no-features cargo-test fuzz-build nostd header firmware c-tests benches demo clean

CBINDGEN ?= cbindgen
C_EXAMPLES := c-examples

## test: every check CI runs, in order (formatting, lints, tests, no_std proofs, the C
## header, the C examples and test suite under ASan/UBSan and valgrind, benches build)
test: tools fmt clippy clippy-no-features cargo-test fuzz-build nostd header firmware c-tests benches
	@echo "make test: all steps passed"

## tools: install what the steps need beyond Rust, gcc and make, if missing
## (rustfmt, clippy, cbindgen 0.29.4, valgrind)
tools:
	@echo "==> tools"
	bash .ci/install-tools

## fmt: code is rustfmt-formatted (main workspace and the no_std check crate)
fmt:
	@echo "==> fmt"
	time $(CARGO) fmt --all -- --check
	time $(CARGO) fmt --manifest-path $(NOSTD_DIR)/Cargo.toml -- --check

## clippy: no lint warnings in any target with every feature
clippy:
	@echo "==> clippy (all targets, all features)"
	time $(CARGO) clippy --workspace --all-targets --all-features -- -D warnings

## clippy-no-features: no lint warnings in the bare no_std library and C ABI
clippy-no-features:
	@echo "==> clippy (library, no features)"
	time $(CARGO) clippy --workspace --lib -- -D warnings
	time $(CARGO) clippy -p lunsnap-ffi --lib --no-default-features --profile firmware -- -D warnings

## cargo-test: a bare `cargo test` (what a new user types first: the core crate's
## tests need no flags), then unit, integration and doc tests of the whole workspace
## with every feature; the tests of `lunsnap serve` with real NBD clients
## (cli/tests/nbd_*.rs) fail, rather than skip, when a client tool is missing
## (`make tools` installs them)
cargo-test:
	@echo "==> cargo test"
	time $(CARGO) test
	time LUNSNAP_REQUIRE_CLIENTS=1 $(CARGO) test --workspace --all-features

## fuzz-build: the cargo-fuzz targets (own workspace in fuzz/) still compile on stable;
## their stored corpus and crashes are replayed by `cargo test` (tests/fuzz_replay.rs,
## server/tests/fuzz_replay.rs)
fuzz-build:
	@echo "==> fuzz targets compile"
	time $(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check
	time $(CARGO) check --manifest-path fuzz/Cargo.toml --bins --examples

## nostd: a #![no_std] binary links against lunsnap without std, and runs
# It uses the main lock file so that it builds the same dependency versions. If std
# leaks into lunsnap or a dependency, the build fails (duplicate `panic_impl`).
nostd:
	@echo "==> no_std check"
	cp Cargo.lock $(NOSTD_DIR)/Cargo.lock
	time (cd $(NOSTD_DIR) && $(CARGO) clippy --release -- -D warnings && $(CARGO) build --release)
	./$(NOSTD_BIN)

## header: include/lunsnap.h is what cbindgen (pinned: 0.29.4) generates from ffi/
header:
	@echo "==> C header up to date"
	$(CBINDGEN) --config ffi/cbindgen.toml --crate lunsnap-ffi --output target/lunsnap.h.fresh
	diff -u include/lunsnap.h target/lunsnap.h.fresh || \
		{ echo "include/lunsnap.h is stale: run 'make header-update'"; exit 1; }

## header-update: regenerate include/lunsnap.h
header-update:
	$(CBINDGEN) --config ffi/cbindgen.toml --crate lunsnap-ffi --output include/lunsnap.h

## firmware: the C ABI builds without std (panic = "abort") and a C host links and runs it
firmware:
	@echo "==> C ABI without std (firmware profile)"
	time $(CARGO) build -p lunsnap-ffi --no-default-features --profile firmware
	$(MAKE) -C $(C_EXAMPLES) firmware

## c-tests: the C examples and test suite, plain, under ASan + UBSan, and under valgrind
c-tests:
	@echo "==> C examples and test suite"
	time $(MAKE) -C $(C_EXAMPLES) run asan valgrind

## benches: the benchmarks compile (they are run by hand, see BENCHMARKS.md)
benches:
	@echo "==> benches build"
	@if [ -d benches ]; then \
		time $(CARGO) build --benches --all-features; \
	else \
		echo "no benches/ directory: skipped"; \
	fi

## demo: the main demonstration (README's first command)
demo:
	$(CARGO) run --release -p lunsnap-cli -- demo

## clean: remove build output (main workspace and the no_std check crate)
clean:
	$(CARGO) clean
	rm -rf $(NOSTD_DIR)/target $(NOSTD_DIR)/Cargo.lock
	$(MAKE) -C $(C_EXAMPLES) clean
