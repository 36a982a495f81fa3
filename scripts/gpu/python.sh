#!/usr/bin/env bash
# GPU run for the Python package (issue 7), on a machine with one CUDA GPU, from the repo root
# (scripts/gpu/run.sh python, or directly). Uses this machine's python3 (the one with torch):
#   1. builds kvpager._kvpager for that python3, the first way that works:
#      a. the whole project in build-py/ (needs the project's Debian dev packages),
#      b. python/ alone in build-py-standalone/ (needs only a C++20 compiler, cuda.h, Python.h
#         and pybind11: `python3 -m pybind11 --cmakedir`),
#      c. a module built elsewhere for this Python and carried in build-gpu/python/
#         (scripts/gpu/python_pack.sh);
#   2. python3 -m pytest tests/python: host-backend tests plus the CUDA ones (index_copy_ into
#      manager-given blocks + scaled_dot_product_attention, bitwise equal to torch.empty memory);
#   3. examples/engine_quickstart.py on cuda:0;
#   4. a wheel build check (pip wheel . --no-deps --no-build-isolation): ok/fail only.
# Writes $OUT/python/python_gpu.log; prints a short summary last. Exit status: pytest's.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/kvpager-out}
dir="$OUT/python"
mkdir -p "$dir"
log="$dir/python_gpu.log"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
: >"$log"
say() { echo "$*" | tee -a "$log"; }

py=$(command -v python3)
jobs=$(nproc)
say "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
say "== $py: $($py -c 'import sys, torch; print(sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.cuda.is_available())' 2>&1 | tail -1)"
ext=$($py -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
cmake_args=(-G Ninja -DCMAKE_BUILD_TYPE=Release "-DPython3_EXECUTABLE=$py")
if pybind11_dir=$($py -m pybind11 --cmakedir 2>/dev/null); then
  cmake_args+=("-Dpybind11_DIR=$pybind11_dir")
fi

# 1. the module
how="none"
pkg=""
say "== build a: whole project (build-py)"
if cmake -S . -B build-py "${cmake_args[@]}" -DKVPAGER_BUILD_TESTS=OFF -DKVPAGER_CUDA=OFF \
     >>"$log" 2>&1 && cmake --build build-py -j "$jobs" --target _kvpager >>"$log" 2>&1; then
  how="a: whole project (build-py)"
  pkg=build-py/python
else
  say "== build b: python/ standalone (build-py-standalone)"
  if cmake -S python -B build-py-standalone "${cmake_args[@]}" >>"$log" 2>&1 &&
     cmake --build build-py-standalone -j "$jobs" >>"$log" 2>&1; then
    how="b: python/ standalone (build-py-standalone)"
    pkg=build-py-standalone
  elif [ -f "build-gpu/python/kvpager/_kvpager$ext" ]; then
    how="c: carried (build-gpu/python)"
    pkg=build-gpu/python
  fi
fi
say "== module: $how"

# pytest itself may be missing there: wheels carried in .whl/ (README of the device tool) help.
if ! $py -c 'import pytest' 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  $py -m pip install -q --no-index --no-deps --no-compile --target "$tmp/site" .whl/*.whl >>"$log" 2>&1
  export PYTHONPATH="$tmp/site"
fi

# 2. tests
test_rc=1
summary="not run (no module)"
cuda_skips="?"
if [ -n "$pkg" ]; then
  say "== pytest tests/python (PYTHONPATH=$pkg)"
  PYTHONPATH="$PWD/$pkg${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 \
    $py -m pytest tests/python -q -rs -p no:cacheprovider >"$tmp/pytest.txt" 2>&1
  test_rc=$?
  [ "$test_rc" -eq 5 ] && test_rc=1  # no tests collected is a failure
  cat "$tmp/pytest.txt" >>"$log"
  summary=$(grep -E '(passed|failed|error)' "$tmp/pytest.txt" | tail -n 1)
  cuda_skips=$(sed -n 's/^SKIPPED \[\([0-9]*\)\] tests\/python\/test_cuda.*/\1/p' "$tmp/pytest.txt" |
    awk '{n += $1} END {print n + 0}')
fi

# 3. the example on the GPU
example="not run"
if [ -n "$pkg" ]; then
  say "== examples/engine_quickstart.py --device cuda:0"
  if PYTHONPATH="$PWD/$pkg${PYTHONPATH:+:$PYTHONPATH}" $py examples/engine_quickstart.py \
       --device cuda:0 >"$tmp/example.txt" 2>&1; then
    example="ok"
  else
    example="FAILED"
  fi
  cat "$tmp/example.txt" >>"$log"
fi

# 4. the wheel (a check only)
say "== pip wheel . --no-deps --no-build-isolation"
if CMAKE_BUILD_PARALLEL_LEVEL=$jobs $py -m pip wheel . --no-deps --no-build-isolation \
     -w "$tmp/wheel" >>"$log" 2>&1; then
  wheel="ok ($(cd "$tmp/wheel" && ls *.whl))"
elif say "== again without the kvpager command (no CLI11/nlohmann_json/ncurses headers?)" &&
     CMAKE_BUILD_PARALLEL_LEVEL=$jobs $py -m pip wheel . --no-deps --no-build-isolation \
     --config-settings=cmake.define.KVPAGER_WHEEL_CLI=OFF -w "$tmp/wheel" >>"$log" 2>&1; then
  wheel="ok, module only: the command's headers are missing ($(cd "$tmp/wheel" && ls *.whl))"
else
  wheel="fail (see $log)"
fi

{
  echo "== summary (Python package, issue 7)"
  echo "module build: $how"
  echo "pytest: $( [ "$test_rc" -eq 0 ] && echo PASS || echo "FAIL rc=$test_rc" ) | $summary"
  echo "CUDA tests skipped: $cuda_skips (expected 0 on a GPU machine; cupy's test skips without cupy)"
  echo "example on cuda:0: $example$(grep -h 'on cuda' "$tmp/example.txt" 2>/dev/null | head -1 | sed 's/^/ | /')"
  echo "wheel: $wheel"
} | tee -a "$log"
exit "$test_rc"
