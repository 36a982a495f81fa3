#!/usr/bin/env bash
# Installs what kvpager needs (Debian packages), then configures and builds it into build/.
# Usage: scripts/setup.sh [extra cmake args...]. Env: BUILD_DIR (default build); BUILD_LABEL:
# build only what the CTest tests of that label need (scripts/label_targets.py), not the tree;
# SETUP_PACKAGES_ONLY=1: install the packages and stop.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(cmake ninja-build g++ pkg-config libgtest-dev libbenchmark-dev libcli11-dev
  nlohmann-json3-dev libyaml-cpp-dev libfmt-dev libspdlog-dev libncurses-dev pybind11-dev
  python3-dev python3-numpy python3-pytest python3-venv liburing-dev libucx-dev ucx-utils etcd-server etcd-client libcurl4-openssl-dev tmux
  clang-format cppcheck)
# python3-torch is large: the Python tests that need it install it through scripts/test.sh.
missing=()
for p in "${PACKAGES[@]}" ${KVPAGER_EXTRA_PACKAGES:-}; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "kvpager setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

[ "${SETUP_PACKAGES_ONLY:-0}" = 1 ] && exit 0

BUILD_DIR=${BUILD_DIR:-build}
if [ -x /usr/local/cuda/bin/nvcc ] && ! command -v nvcc >/dev/null; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} \
  -DPython3_EXECUTABLE=${PYTHON:-/usr/bin/python3} "$@" >/dev/null
targets=()
if [ -n "${BUILD_LABEL:-}" ]; then
  label_targets=$(/usr/bin/python3 scripts/label_targets.py "$BUILD_DIR" "$BUILD_LABEL")
  read -r -a targets <<<"$label_targets"
  echo "kvpager setup: building the ${#targets[@]} targets of the tests labelled $BUILD_LABEL"
fi
cmake --build "$BUILD_DIR" -j "$(nproc)" ${targets[@]+--target "${targets[@]}"}
