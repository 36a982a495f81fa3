#!/usr/bin/env bash
# The wheel as a user gets it (issue 21 item 3): `pip wheel .`, a fresh virtual environment that
# installs that wheel alone (no index, no dependencies), then from it: `kvpager list`,
# `kvpager --help` (the registry commands) and `python -c 'import kvpager'`.
# Build tools: scikit-build-core from PyPI (Debian 12 packages none) in a build environment;
# pybind11 is Debian's (pybind11-dev), found by python/CMakeLists.txt. About 2 minutes on 2 cores
# (the module, the kv stack it compiles and the command's registry commands, Release).
# Env: WHEEL_DIR (default build-wheel; its cmake/ keeps the build for the next run),
# PYTHON (default /usr/bin/python3).
# --prepare: only make the build environment (network, little CPU: scripts/test.sh does it while
# build/ compiles); a later run uses it once, then makes a fresh one again.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mkdir -p "${WHEEL_DIR:-build-wheel}" && cd "${WHEEL_DIR:-build-wheel}" && pwd)
py=${PYTHON:-/usr/bin/python3}
rm -rf "$dir/venv" "$dir/dist"

if [ "${1:-}" = --prepare ] || [ ! -f "$dir/venv-build/prepared" ]; then
  echo "wheel: build environment ($dir/venv-build) with scikit-build-core"
  rm -rf "$dir/venv-build"
  "$py" -m venv "$dir/venv-build"
  "$dir/venv-build/bin/pip" install -q --disable-pip-version-check "scikit-build-core>=0.10"
  touch "$dir/venv-build/prepared"
  [ "${1:-}" = --prepare ] && exit 0
fi
rm "$dir/venv-build/prepared"  # used once: the next run builds in a fresh environment

echo "wheel: pip wheel ."
CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$dir/venv-build/bin/pip" wheel . -q --no-deps \
  --no-build-isolation --disable-pip-version-check -w "$dir/dist" \
  --config-settings=build-dir="$dir/cmake"
wheel=$(ls "$dir"/dist/kvpager-*.whl)
echo "wheel: $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB)"
"$dir/venv-build/bin/python" - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
scripts = [n for n in names if ".data/scripts/" in n]
assert any(n.endswith("/scripts/kvpager") for n in scripts), f"no kvpager command in {names}"
assert any("/_kvpager" in n for n in names), "no extension module"
PY

echo "wheel: fresh environment ($dir/venv), pip install --no-index --no-deps"
"$py" -m venv "$dir/venv"
"$dir/venv/bin/pip" install -q --no-index --no-deps --disable-pip-version-check "$wheel"
# as a user would run them: the environment's bin/ first on PATH, outside the source tree
(
  cd /
  export PATH="$dir/venv/bin:$PATH"
  [ "$(command -v kvpager)" = "$dir/venv/bin/kvpager" ] || { echo "kvpager is not the wheel's" >&2; exit 1; }
  kvpager list
  kvpager --help | grep -q guarantee
  kvpager --version
  python -c 'import kvpager, sys; assert kvpager.__file__.startswith(sys.prefix), kvpager.__file__; print("import kvpager:", kvpager.__file__)'
  # the integrations' subpackages are in it too (neither engine is installed here)
  python -c 'from kvpager.integrations import policy, transformers; from kvpager.integrations.vllm import options'
)
echo "wheel: ok"
