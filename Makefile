# flowrun — build, test, bench, install.
#   make            build ./flowrun
#   make test       install missing packages, build, start test servers, run every test (prove)
#   make asan       the whole test suite against an ASan+UBSan build
#   make bench      benchmarks, our figures beside the peers' (not timed tests)
#   make fuzz       every libFuzzer target for FUZZ_TIME seconds (60); make fuzz-merge keeps
#                   what they found, minimised, in tests/fuzz/corpus/
#   make demo       the DMS -> EMR pipeline in the simulator
#   make install PREFIX=/usr/local

PKGS     := lua5.4 libuv libcurl openssl jansson libpq expat libedit libh2o zlib
# The binary holds the core; each shared unit (a C unit that links a heavy library) is a
# shared object BUILD/lib/<unit>.so loaded on first require (runtime/main.c lists them too),
# so `flowrun -e` does not pay for loading libcurl, libpq or OpenSSL.
CORE_PKGS    := lua5.4 libuv jansson
SHARED_UNITS := http pg xml sigv4 repl httpd zlib
# C files linked into a shared unit besides its own (pg.so holds pg.c and its value codec)
UNIT_PARTS   := pg_values
PREFIX   ?= /usr/local
BUILD    ?= build
CC       ?= cc
CFLAGS   ?= -O2 -g
WARN     := -Wall -Wextra -Werror
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CORE_LIBS  := $(shell pkg-config --libs $(CORE_PKGS) 2>/dev/null)
ALL_CFLAGS = -std=gnu11 $(WARN) $(CFLAGS) -fPIC $(PKG_CFLAGS) -DFR_PREFIX='"$(PREFIX)"'

SRC      := $(wildcard runtime/*.c)
OBJ      := $(SRC:runtime/%.c=$(BUILD)/%.o)
LIBOBJ   := $(filter-out $(BUILD)/main.o,$(OBJ))
MODOBJ   := $(filter $(SHARED_UNITS:%=$(BUILD)/%.o),$(OBJ))
PARTOBJ  := $(UNIT_PARTS:%=$(BUILD)/%.o)
COREOBJ  := $(filter-out $(MODOBJ) $(PARTOBJ),$(OBJ))
MODS     := $(MODOBJ:$(BUILD)/%.o=$(BUILD)/lib/%.so)
CTESTS   := $(patsubst tests/c/%.c,$(BUILD)/tests/%.t,$(wildcard tests/c/*.c))
BIN      ?= flowrun

.PHONY: all test check asan bench demo install clean deps ctests format fuzz fuzz-build fuzz-merge

all: $(BIN) $(MODS)

$(BIN): $(COREOBJ)
	$(CC) -o $@ $(COREOBJ) $(LDFLAGS) -Wl,-E -Wl,--as-needed $(CORE_LIBS) -ldl -lm

$(BUILD)/lib/pg.so: $(BUILD)/pg_values.o

$(BUILD)/lib/%.so: $(BUILD)/%.o
	@mkdir -p $(BUILD)/lib
	$(CC) -shared -o $@ $^ $(LDFLAGS) -Wl,--as-needed $(PKG_LIBS) -lm

$(BUILD)/%.o: runtime/%.c runtime/flowrun.h | $(BUILD)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/tests/%.t: tests/c/%.c tests/c/tap.h $(LIBOBJ) | $(BUILD)
	@mkdir -p $(BUILD)/tests
	$(CC) $(ALL_CFLAGS) -Iruntime -o $@ $< $(LIBOBJ) $(LDFLAGS) $(PKG_LIBS) -lm

$(BUILD):
	@mkdir -p $(BUILD)

ctests: $(CTESTS)

deps:
	@scripts/deps.sh

# The test command the README gives; .ci/run calls it.
test:
	@scripts/test.sh

check: test

asan:
	@ASAN=1 scripts/test.sh

bench: all
	@scripts/bench.sh

demo:
	@scripts/demo.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/flowrun $(DESTDIR)$(PREFIX)/lib/flowrun
	install -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/flowrun
	install -m 755 $(MODS) $(DESTDIR)$(PREFIX)/lib/flowrun/
	cp -R lua stdlib workflows web $(DESTDIR)$(PREFIX)/share/flowrun/

format:
	clang-format -i runtime/*.c runtime/*.h tests/c/*.c tests/c/*.h tests/fuzz/*.c tests/fuzz/*.h

# ---- fuzzing: the pure units under libFuzzer with ASan and UBSan (clang; Debian's clang 14 and
# libclang-rt-14-dev). Each target links its unit and the small units it needs.
FUZZ_BUILD   ?= build-fuzz
FUZZ_TIME    ?= 60
FUZZ_CC      ?= clang
FUZZ_TARGETS := sigv4 json xml pg_values zlib
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS   = -std=gnu11 -g -O1 $(FUZZ_SAN) $(PKG_CFLAGS) -Iruntime
FUZZ_COMMON  := $(patsubst %,$(FUZZ_BUILD)/obj/%.o,module error json)

$(FUZZ_BUILD)/obj/%.o: runtime/%.c runtime/flowrun.h
	@mkdir -p $(FUZZ_BUILD)/obj
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c -o $@ $<

.PRECIOUS: $(FUZZ_BUILD)/obj/%.o

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(FUZZ_COMMON) $(FUZZ_BUILD)/obj/%.o
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(filter %.o,$^) $(LDFLAGS) \
	    -Wl,--as-needed $(PKG_LIBS) -lm

fuzz-build: $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)

fuzz: fuzz-build
	@FUZZ_BUILD=$(FUZZ_BUILD) FUZZ_TIME=$(FUZZ_TIME) tests/fuzz/run.sh run $(FUZZ_TARGETS)

fuzz-merge: fuzz-build
	@FUZZ_BUILD=$(FUZZ_BUILD) tests/fuzz/run.sh merge $(FUZZ_TARGETS)

clean:
	rm -rf build build-asan build-fuzz flowrun

-include $(OBJ:.o=.d) $(wildcard $(FUZZ_BUILD)/obj/*.d)
