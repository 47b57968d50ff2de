# SPDX-License-Identifier: MIT
# img: one non-recursive Makefile. Variants build out of tree: build/ (default),
# build-asan/ (ASan+UBSan), build-fuzz/ (libFuzzer). Quiet unless V=1.

PREFIX ?= /usr/local
DESTDIR ?=
B ?= build
CC ?= cc
VERSION := 0.1.0

ifeq ($(V),1)
Q :=
else
Q := @
endif

PKGS := liburing libzstd zlib libdeflate libcrypto
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
FUSE_CFLAGS := $(shell pkg-config --cflags fuse3 2>/dev/null)
FUSE_LIBS := $(shell pkg-config --libs fuse3 2>/dev/null)

WARN := -Wall -Wextra -Wshadow -Wformat=2 -Wmissing-prototypes -Wvla \
	-Wimplicit-fallthrough -Wno-unused-parameter
OPT ?= -O2 -g
CFLAGS_ALL := -std=gnu11 $(OPT) $(WARN) -fPIC -D_GNU_SOURCE -Ilib \
	$(PKG_CFLAGS) $(SAN_CFLAGS) $(CFLAGS)
LDFLAGS_ALL := $(SAN_CFLAGS) $(LDFLAGS)
LIBS := $(PKG_LIBS) -lpthread -lm
# Ceph RBD backend (lib/io-rbd.c) when librbd-dev is installed (no .pc file).
ifneq ($(wildcard /usr/include/rbd/librbd.h),)
CFLAGS_ALL += -DIMG_HAVE_RBD
LIBS += -lrbd -lrados
endif

LIB_SRC := $(sort $(wildcard lib/*.c) $(wildcard formats/*.c) \
	$(wildcard formats/*/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(B)/%.o)
IMG_SRC := $(sort $(wildcard tools/img/*.c))
NBD_SRC := $(sort $(wildcard tools/nbd/*.c))
FUSE_SRC := $(sort $(wildcard fuse/*.c))
UNIT_SRC := $(sort $(wildcard tests/unit/test-*.c))
UNIT_HELPER_SRC := $(filter-out $(UNIT_SRC),$(wildcard tests/unit/*.c))
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz-*.c))

BINS := $(B)/img
ifneq ($(NBD_SRC),)
BINS += $(B)/img-nbd
endif
ifneq ($(FUSE_SRC),)
BINS += $(B)/img-fuse
endif
UNIT_BINS := $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)
FUZZ_REPLAY_BINS := $(FUZZ_SRC:tests/fuzz/%.c=$(B)/tests/%)

.PHONY: all deps demo check check-only asan tsan fuzz bench check-format \
	format check-deps install clean tests
.DEFAULT_GOAL := all
# Keep the objects of pattern-rule chains (tests/unit/*.o): otherwise make
# deletes them at exit and prints "rm ..." after the test summary.
.SECONDARY:

all: $(B)/libimg.a $(B)/libimg.so $(BINS) $(B)/libimg.pc

tests: all $(UNIT_BINS) $(FUZZ_REPLAY_BINS) $(B)/tests/no-uring

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS_ALL) $(if $(filter fuse/%,$<),$(FUSE_CFLAGS)) \
		-MMD -MP -c $< -o $@

$(B)/libimg.a: $(LIB_OBJ)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(B)/libimg.so: $(LIB_OBJ) lib/libimg.map
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -shared -Wl,--version-script=lib/libimg.map \
		-Wl,-soname,libimg.so.0 $(LDFLAGS_ALL) -o $@ $(LIB_OBJ) $(LIBS)

$(B)/libimg.pc: lib/libimg.pc.in Makefile
	$(Q)sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' \
		-e 's|@LIBS@|$(LIBS)|' $< > $@

$(B)/img: $(IMG_SRC:%.c=$(B)/%.o) $(B)/libimg.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $(filter %.o,$^) $(B)/libimg.a $(LIBS)

$(B)/img-nbd: $(NBD_SRC:%.c=$(B)/%.o) $(B)/libimg.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $(filter %.o,$^) $(B)/libimg.a \
		$(LIBS) -lssl

$(B)/img-fuse: $(FUSE_SRC:%.c=$(B)/%.o) $(B)/libimg.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $(filter %.o,$^) $(B)/libimg.a \
		$(FUSE_LIBS) $(LIBS)

$(B)/tests/test-%: $(B)/tests/unit/test-%.o $(UNIT_HELPER_SRC:%.c=$(B)/%.o) \
		$(B)/libimg.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $(filter %.o,$^) $(B)/libimg.a $(LIBS)

# tests/run.sh's second unit pass runs each test under it (io_uring refused).
$(B)/tests/no-uring: $(B)/tests/no-uring.o
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^

# Fuzz targets link with a plain main() that replays their corpus.
$(B)/tests/fuzz-%: $(B)/tests/fuzz/fuzz-%.o $(B)/tests/fuzz/replay.o \
		$(B)/libimg.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $(filter %.o,$^) $(B)/libimg.a $(LIBS)

-include $(shell find $(B) -name '*.d' 2>/dev/null)

deps:
	$(Q)./scripts/install-deps.sh

demo: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)./scripts/demo.sh $(B)

check: deps
	$(Q)$(MAKE) --no-print-directory check-only

# TEST_JOBS=N: tests run at once (run.sh's -j; it prints the one it uses).
check-only: tests
	$(Q)SAN_CFLAGS="$(SAN_CFLAGS)" ./tests/run.sh $(if $(TEST_JOBS),-j $(TEST_JOBS)) $(B)

# Sanitized code runs several times slower: allow each test more time.
asan:
	$(Q)TEST_TIMEOUT=$${TEST_TIMEOUT:-1200} $(MAKE) --no-print-directory \
		B=build-asan OPT="-O1 -g" \
		SAN_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
		check-only

# The unit tests that run threads (aio, the image lock, rings per thread,
# the error TLS, the cipher pool) or drive the multithreaded img-fuse, both
# passes (the :no-uring one runs them on the psync fallback); a TSan report
# fails the test. A run.sh PATTERN: bash extglob, matched as a substring.
TSAN_TESTS ?= unit/test-@(aio|image|io|kv|luks|fuse-random)
tsan:
	$(Q)$(MAKE) --no-print-directory B=build-tsan OPT="-O1 -g" \
		SAN_CFLAGS="-fsanitize=thread" tests
	$(Q)TSAN_OPTIONS="halt_on_error=1 $${TSAN_OPTIONS:-}" \
		TEST_TIMEOUT=$${TEST_TIMEOUT:-1200} ./tests/run.sh \
		$(if $(TEST_JOBS),-j $(TEST_JOBS)) build-tsan '$(TSAN_TESTS)'

# libFuzzer builds: build-fuzz/fuzz-<target>, run with e.g.
#   build-fuzz/fuzz-qcow2 -max_total_time=60 tests/fuzz/corpus/qcow2
FUZZ_FLAGS := -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer
fuzz:
	$(Q)$(MAKE) --no-print-directory B=build-fuzz CC=clang OPT="-O1 -g" \
		SAN_CFLAGS="-fsanitize=fuzzer-no-link,address,undefined" \
		build-fuzz/libimg.a
	$(Q)for f in $(FUZZ_SRC); do \
		n=$$(basename $$f .c); \
		echo "  FUZZ    build-fuzz/$$n"; \
		clang -std=gnu11 -O1 -g -D_GNU_SOURCE -Ilib $(FUZZ_FLAGS) \
			$$f build-fuzz/libimg.a $(LIBS) -o build-fuzz/$$n || exit 1; \
	done

bench: deps all
	$(Q)./bench/run.sh $(B)
	$(Q)./bench/fuse.sh $(B)
	$(Q)./bench/nbd.sh $(B)
	$(Q)./bench/nbd-direct.sh $(B)

CFORMAT_FILES = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
check-format:
	$(Q)clang-format --dry-run --Werror $(CFORMAT_FILES)

format:
	$(Q)clang-format -i $(CFORMAT_FILES)

check-deps:
	$(Q)./scripts/check-deps.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib \
		$(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 755 $(BINS) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 lib/img.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(B)/libimg.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(B)/libimg.so $(DESTDIR)$(PREFIX)/lib/libimg.so.0
	ln -sf libimg.so.0 $(DESTDIR)$(PREFIX)/lib/libimg.so
	install -m 644 $(B)/libimg.pc $(DESTDIR)$(PREFIX)/lib/pkgconfig/

clean:
	rm -rf build build-asan build-tsan build-fuzz
