#!/usr/bin/env bash
# One command from a fresh clone: install, build, and run `kvpager demo` (CUDA backend when a
# GPU is present, host backend otherwise). Extra arguments go to `kvpager demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh -DKVPAGER_BUILD_TESTS=OFF
exec build/kvpager demo "$@"
