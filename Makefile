# flowrun — build, test, bench, install.
#   make            build ./flowrun
#   make test       install missing packages, build, start test servers, run every test (prove)
#   make asan       the whole test suite against an ASan+UBSan build
#   make bench      benchmarks, our figures beside the peers' (not timed tests)
#   make demo       the DMS -> EMR pipeline in the simulator
#   make install PREFIX=/usr/local

PKGS     := lua5.4 libuv libcurl openssl jansson libpq expat libedit libh2o
# The binary holds the core; each shared unit (a C unit that links a heavy library) is a
# shared object BUILD/lib/<unit>.so loaded on first require (runtime/main.c lists them too),
# so `flowrun -e` does not pay for loading libcurl, libpq or OpenSSL.
CORE_PKGS    := lua5.4 libuv jansson
SHARED_UNITS := http pg xml sigv4 repl httpd
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
COREOBJ  := $(filter-out $(MODOBJ),$(OBJ))
MODS     := $(MODOBJ:$(BUILD)/%.o=$(BUILD)/lib/%.so)
CTESTS   := $(patsubst tests/c/%.c,$(BUILD)/tests/%.t,$(wildcard tests/c/*.c))
BIN      ?= flowrun

.PHONY: all test check asan bench demo install clean deps ctests format

all: $(BIN) $(MODS)

$(BIN): $(COREOBJ)
	$(CC) -o $@ $(COREOBJ) $(LDFLAGS) -Wl,-E -Wl,--as-needed $(CORE_LIBS) -ldl -lm

$(BUILD)/lib/%.so: $(BUILD)/%.o
	@mkdir -p $(BUILD)/lib
	$(CC) -shared -o $@ $< $(LDFLAGS) -Wl,--as-needed $(PKG_LIBS) -lm

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
	clang-format -i runtime/*.c runtime/*.h tests/c/*.c tests/c/*.h

clean:
	rm -rf build build-asan flowrun

-include $(OBJ:.o=.d)
