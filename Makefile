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

.PHONY: test tools fmt clippy clippy-no-features cargo-test fuzz-build nostd header firmware c-tests pkgconfig-example benches demo clean install uninstall

CBINDGEN ?= cbindgen
C_EXAMPLES := c-examples

## test: every check CI runs, in order (formatting, lints, tests, no_std proofs, the C
## header, the C examples and test suite under ASan/UBSan and valgrind, a C program built
## with pkg-config against an installed tree, benches build)
test: tools fmt clippy clippy-no-features cargo-test fuzz-build nostd header firmware c-tests pkgconfig-example benches
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

## install: the C library, as a C library is installed: PREFIX/include/lunsnap.h,
## LIBDIR/liblunsnap.a, LIBDIR/liblunsnap.so.X.Y.Z (SONAME liblunsnap.so.0.MINOR before 1.0,
## liblunsnap.so.MAJOR after: set by ffi/build.rs) with the links liblunsnap.so.SONAME and
## liblunsnap.so, and PKGCONFIGDIR/lunsnap.pc (the static library's native libraries in
## Libs.private). `make install PREFIX=$HOME/.local`; DESTDIR is honoured (staged installs)
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
DESTDIR ?=
TARGET_DIR := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)
FFI_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' ffi/Cargo.toml | head -n 1)
FFI_MAJOR := $(word 1,$(subst ., ,$(FFI_VERSION)))
FFI_MINOR := $(word 2,$(subst ., ,$(FFI_VERSION)))
SONAME := liblunsnap.so.$(if $(filter 0,$(FFI_MAJOR)),0.$(FFI_MINOR),$(FFI_MAJOR))
SHARED_LIB := liblunsnap.so.$(FFI_VERSION)

install:
	@echo "==> install lunsnap $(FFI_VERSION) into $(DESTDIR)$(PREFIX)"
	$(CARGO) build -p lunsnap-ffi --release
	$(MAKE) --no-print-directory -C $(C_EXAMPLES) build/native-static-libs.txt
	@soname=$$(readelf -d $(TARGET_DIR)/release/liblunsnap_ffi.so | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p'); \
		[[ "$$soname" == "$(SONAME)" ]] || \
		{ echo "the shared library's SONAME is '$$soname', expected $(SONAME) (ffi/build.rs)"; exit 1; }
	install -d $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR)
	install -m 644 include/lunsnap.h $(DESTDIR)$(INCLUDEDIR)/lunsnap.h
	install -m 644 $(TARGET_DIR)/release/liblunsnap_ffi.a $(DESTDIR)$(LIBDIR)/liblunsnap.a
	install -m 755 $(TARGET_DIR)/release/liblunsnap_ffi.so $(DESTDIR)$(LIBDIR)/$(SHARED_LIB)
	ln -sfn $(SHARED_LIB) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sfn $(SONAME) $(DESTDIR)$(LIBDIR)/liblunsnap.so
	{ \
		echo "prefix=$(PREFIX)"; \
		echo "libdir=$(LIBDIR)"; \
		echo "includedir=$(INCLUDEDIR)"; \
		echo; \
		echo "Name: lunsnap"; \
		echo "Description: LUNs and instant business copies over a block device (C ABI)"; \
		echo "Version: $(FFI_VERSION)"; \
		echo "Cflags: -I\$${includedir}"; \
		echo "Libs: -L\$${libdir} -llunsnap"; \
		echo "Libs.private: $$(cat $(C_EXAMPLES)/build/native-static-libs.txt)"; \
	} > $(DESTDIR)$(PKGCONFIGDIR)/lunsnap.pc
	chmod 644 $(DESTDIR)$(PKGCONFIGDIR)/lunsnap.pc
	@echo "installed: $(DESTDIR)$(INCLUDEDIR)/lunsnap.h, $(DESTDIR)$(LIBDIR)/{liblunsnap.a,$(SHARED_LIB),$(SONAME),liblunsnap.so}, $(DESTDIR)$(PKGCONFIGDIR)/lunsnap.pc"

## uninstall: remove what `make install` installed (same PREFIX, LIBDIR, ...)
uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/lunsnap.h $(DESTDIR)$(LIBDIR)/liblunsnap.a \
		$(DESTDIR)$(LIBDIR)/$(SHARED_LIB) $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/liblunsnap.so \
		$(DESTDIR)$(PKGCONFIGDIR)/lunsnap.pc

## pkgconfig-example: `make install` into a temporary PREFIX, then build
## c-examples/pkgconfig_example.c there with nothing but `pkg-config --cflags --libs lunsnap`
## (PKG_CONFIG_PATH pointing into the tree): linked to the shared library (its SONAME
## recorded, found through LD_LIBRARY_PATH), and with `--static` to the static one (no
## liblunsnap.so needed); both must run
pkgconfig-example:
	@echo "==> C example built with pkg-config against an installed tree"
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(MAKE) --no-print-directory install PREFIX="$$tmp/prefix" DESTDIR=; \
	export PKG_CONFIG_PATH="$$tmp/prefix/lib/pkgconfig"; \
	pkg-config --exists --print-errors lunsnap; \
	[[ "$$(pkg-config --modversion lunsnap)" == "$(FFI_VERSION)" ]]; \
	echo "pkg-config --cflags --libs lunsnap: $$(pkg-config --cflags --libs lunsnap)"; \
	echo "pkg-config --static --libs lunsnap: $$(pkg-config --static --libs lunsnap)"; \
	cp $(C_EXAMPLES)/pkgconfig_example.c "$$tmp/"; \
	cd "$$tmp"; \
	$(CC) -std=c11 -Wall -Wextra -Wpedantic -Werror -o example pkgconfig_example.c \
		$$(pkg-config --cflags --libs lunsnap); \
	readelf -d example | grep -q 'NEEDED.*\[$(SONAME)\]' || \
		{ echo "example does not need $(SONAME)"; readelf -d example; exit 1; }; \
	LD_LIBRARY_PATH="$$tmp/prefix/lib" ./example; \
	$(CC) -std=c11 -Wall -Wextra -Wpedantic -Werror -o example-static pkgconfig_example.c \
		$$(pkg-config --cflags lunsnap) $$(pkg-config --static --libs lunsnap | sed 's/-llunsnap\b/-l:liblunsnap.a/'); \
	! readelf -d example-static | grep -q 'liblunsnap' || { echo "example-static needs liblunsnap.so"; exit 1; }; \
	./example-static; \
	echo "pkgconfig-example: built and ran against the installed tree (shared: $(SONAME); static: liblunsnap.a + Libs.private)"

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
