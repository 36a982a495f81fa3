#!/usr/bin/env bash
# One command from a fresh clone: install, build and run every test.
#  1. the full suite (unit, multi-process, CLI, Python; gpu-labelled tests skip without a GPU),
#     then a C++ project using the installed package (scripts/cmake_consumer_test.sh), the wheel
#     in a fresh virtual environment (scripts/wheel_test.sh) and the format and lint checks
#     (scripts/lint.sh: clang-format, cppcheck, ruff, mypy)
#  2. the unit tests again under AddressSanitizer + UndefinedBehaviorSanitizer
#  3. the concurrency tests under ThreadSanitizer
#  (each sanitizer build compiles only what its label's tests need: setup.sh BUILD_LABEL)
# Env: KVPAGER_SKIP_SANITIZERS=1 skips 2 and 3 (quick local loop).
set -euo pipefail
cd "$(dirname "$0")/.."
export KVPAGER_EXTRA_PACKAGES="python3-torch"
jobs=$(nproc)
# Each phase's wall time and CPU time (user + system of the processes it ran, which other load
# on the machine changes far less), printed at the end (docs/benchmarks.md keeps measured runs).
timings=()
started=$SECONDS
times_file=$(mktemp)
trap 'rm -f "$times_file" "$times_file.cpu"' EXIT
cpu_seconds() {  # of this shell's finished children: `times` in this shell, not a subshell
  times >"$times_file"
  awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/);
                 printf "%d", u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$times_file"
}
phase_name="" phase_start=$SECONDS phase_cpu=0
# phase NAME: ends the running phase (keeping its times) and starts NAME ("" at the end).
phase() {
  local cpu
  cpu_seconds >"$times_file.cpu"
  cpu=$(<"$times_file.cpu")
  if [ -n "$phase_name" ]; then
    timings+=("$(printf '%5d s %6d s  %s' $((SECONDS - phase_start)) $((cpu - phase_cpu)) \
      "$phase_name")")
  fi
  phase_name=$1 phase_start=$SECONDS phase_cpu=$cpu
  if [ -n "$1" ]; then echo "== $1"; fi
}

phase "Debian packages"
SETUP_PACKAGES_ONLY=1 scripts/setup.sh
# While build/ compiles (CPU), download what the lint and wheel phases install from PyPI
# (network); each phase installs it itself if this failed.
mkdir -p build-lint build-wheel
scripts/lint.sh --prepare >build-lint/prepare.log 2>&1 &
lint_prepare=$!
scripts/wheel_test.sh --prepare >build-wheel/prepare.log 2>&1 &
wheel_prepare=$!

# Tests ON explicitly: scripts/demo.sh configures build/ without them, and CMake would keep
# that cached value (a demo then a test run ran no CTest test). No test found is a failure.
phase "build (build/)"
scripts/setup.sh -DKVPAGER_BUILD_TESTS=ON
phase "CTest suite (build/)"
ctest --test-dir build --output-on-failure -j "$jobs" --no-tests=error
phase "Python tests (tests/python against build/python, Debian's python3)"
PYTHONPATH="$PWD/build/python" /usr/bin/python3 -m pytest tests/python -q -p no:cacheprovider \
  --durations=10 || { rc=$?; [ "$rc" -eq 5 ] && echo "pytest collected no tests" >&2; exit 1; }
phase "find_package(kvpager) (cmake --install build/ into a fresh prefix, tests/cmake_consumer)"
scripts/cmake_consumer_test.sh build
phase "wheel (pip wheel ., a fresh venv installs it offline, kvpager list, import kvpager)"
wait "$wheel_prepare" || cat build-wheel/prepare.log
scripts/wheel_test.sh
phase "format and lint (clang-format, cppcheck, ruff, mypy)"
wait "$lint_prepare" || cat build-lint/prepare.log
scripts/lint.sh

if [ "${KVPAGER_SKIP_SANITIZERS:-0}" != 1 ]; then
  phase "AddressSanitizer + UndefinedBehaviorSanitizer build (build-asan/)"
  BUILD_DIR=build-asan BUILD_TYPE=Debug BUILD_LABEL=unit scripts/setup.sh -DKVPAGER_SANITIZE=address,undefined \
    -DKVPAGER_CUDA=OFF -DKVPAGER_BUILD_PYTHON=OFF
  phase "AddressSanitizer + UndefinedBehaviorSanitizer tests (build-asan/, label unit)"
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan --output-on-failure -j "$jobs" -L unit --no-tests=error

  phase "ThreadSanitizer build (build-tsan/)"
  BUILD_DIR=build-tsan BUILD_TYPE=Debug BUILD_LABEL=concurrency scripts/setup.sh -DKVPAGER_SANITIZE=thread \
    -DKVPAGER_CUDA=OFF -DKVPAGER_BUILD_PYTHON=OFF
  phase "ThreadSanitizer tests (build-tsan/, label concurrency)"
  TSAN_OPTIONS=halt_on_error=1 ctest --test-dir build-tsan --output-on-failure -j "$jobs" -L concurrency --no-tests=error
fi
phase ""
echo "== all tests passed; per phase: wall time, CPU time"
printf '%s\n' "${timings[@]}"
cpu_seconds >"$times_file.cpu"
printf '%5d s %6d s  total\n' $((SECONDS - started)) "$(<"$times_file.cpu")"
