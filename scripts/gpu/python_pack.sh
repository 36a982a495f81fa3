#!/usr/bin/env bash
# Fallback for scripts/gpu/python.sh: builds the Python package HERE for the GPU machine's
# Python (3.12, see the device tool's KINDS.md), in case that machine cannot compile it (no
# Python.h or pybind11 there). The package lands in build-gpu/python/kvpager; carry build-gpu
# as for pack.sh. Run after pack.sh (which recreates build-gpu/).
# Env: PYTHON_GPU: a CPython of the GPU machine's minor version with its headers (default:
# python3.12 on PATH, else pyenv's newest 3.12). pybind11 for it comes from pip, in a venv.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
py=${PYTHON_GPU:-}
if [ -z "$py" ]; then
  for candidate in python3.12 $(ls -d /root/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null | sort -r); do
    if "$candidate" -c 'import sys' 2>/dev/null; then py=$candidate; break; fi
  done
fi
[ -n "$py" ] || { echo "python_pack: no working Python 3.12 here; set PYTHON_GPU" >&2; exit 1; }
venv=/tmp/kvpager-gpu-pyvenv
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
"$venv/bin/python" -c 'import pybind11' 2>/dev/null || "$venv/bin/python" -m pip install -q pybind11
src=/tmp/kvpager-gpu-py-src
rm -rf "$src" && git clone -q . "$src"
cmake -S "$src/python" -B "$root/build-gpu-py" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DPython3_EXECUTABLE="$venv/bin/python" -Dpybind11_DIR="$("$venv/bin/python" -m pybind11 --cmakedir)" >/dev/null
cmake --build "$root/build-gpu-py" -j "$(nproc)"
rm -rf build-gpu/python && mkdir -p build-gpu/python
cp -r build-gpu-py/kvpager build-gpu/python/
strip --strip-unneeded build-gpu/python/kvpager/_kvpager*.so
PYTHONPATH=build-gpu/python "$venv/bin/python" -c 'import kvpager; print("kvpager", kvpager.__version__, "for", __import__("sys").version.split()[0])'
du -sh build-gpu/python
echo "source: $src (commit $(git -C "$src" rev-parse --short HEAD))"
