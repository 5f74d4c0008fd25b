#!/usr/bin/env bash
# make test: every libFuzzer target over its committed corpus and a few seconds more (TAP).
exec "$(dirname "$0")/run.sh" smoke
