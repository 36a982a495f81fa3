#!/usr/bin/env bash
# One command from a fresh clone: install, build and run every test.
#  1. the full suite (unit, multi-process, CLI, Python; gpu-labelled tests skip without a GPU),
#     then the wheel in a fresh virtual environment (scripts/wheel_test.sh) and the format and
#     lint checks (scripts/lint.sh: clang-format, cppcheck)
#  2. the unit tests again under AddressSanitizer + UndefinedBehaviorSanitizer
#  3. the concurrency tests under ThreadSanitizer
# Env: KVPAGER_SKIP_SANITIZERS=1 skips 2 and 3 (quick local loop).
set -euo pipefail
cd "$(dirname "$0")/.."
export KVPAGER_EXTRA_PACKAGES="python3-torch"
jobs=$(nproc)

echo "== build and test (build/)"
# Tests ON explicitly: scripts/demo.sh configures build/ without them, and CMake would keep
# that cached value (a demo then a test run ran no CTest test). No test found is a failure.
scripts/setup.sh -DKVPAGER_BUILD_TESTS=ON
ctest --test-dir build --output-on-failure -j "$jobs" --no-tests=error
echo "== Python tests (tests/python against build/python, Debian's python3)"
PYTHONPATH="$PWD/build/python" /usr/bin/python3 -m pytest tests/python -q -p no:cacheprovider || {
  rc=$?; [ "$rc" -eq 5 ] && echo "pytest collected no tests" >&2; exit 1; }
echo "== wheel (pip wheel ., a fresh venv installs it offline, kvpager list, import kvpager)"
scripts/wheel_test.sh
echo "== format and lint (clang-format, cppcheck)"
scripts/lint.sh

if [ "${KVPAGER_SKIP_SANITIZERS:-0}" != 1 ]; then
  echo "== AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/, label unit)"
  BUILD_DIR=build-asan BUILD_TYPE=Debug scripts/setup.sh -DKVPAGER_SANITIZE=address,undefined \
    -DKVPAGER_CUDA=OFF -DKVPAGER_BUILD_PYTHON=OFF
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan --output-on-failure -j "$jobs" -L unit --no-tests=error

  echo "== ThreadSanitizer (build-tsan/, label concurrency)"
  BUILD_DIR=build-tsan BUILD_TYPE=Debug scripts/setup.sh -DKVPAGER_SANITIZE=thread \
    -DKVPAGER_CUDA=OFF -DKVPAGER_BUILD_PYTHON=OFF
  TSAN_OPTIONS=halt_on_error=1 ctest --test-dir build-tsan --output-on-failure -j "$jobs" -L concurrency --no-tests=error
fi
echo "== all tests passed"
