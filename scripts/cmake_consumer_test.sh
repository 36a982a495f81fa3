#!/usr/bin/env bash
# find_package(kvpager) as a C++ user gets it (issue 21 item 3): `cmake --install` of a built
# tree into a fresh prefix, then tests/cmake_consumer (copied outside the source tree) is
# configured against that prefix alone, built and run. Fails when the installed package
# names a path in the source or build tree, when a header or library is missing, or when the
# consumer's KvCache on the host backend or its model lookup does not work.
# Usage: scripts/cmake_consumer_test.sh [BUILD_DIR] (default build/, built by scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
build=$(cd "${1:-build}" && pwd)
work=$(mktemp -d /tmp/kvpager-consumer.XXXXXX)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix

cmake --install "$build" --prefix "$prefix" >"$work/install.log" ||
  { cat "$work/install.log" >&2; exit 1; }
for f in "$prefix"/lib/cmake/kvpager/kvpagerConfig.cmake "$prefix"/include/kvpager/kv/kv_cache.hpp \
         "$prefix"/lib/libkvpager_kv.a; do
  [ -f "$f" ] || { echo "cmake consumer: ${f#"$prefix"/} not installed" >&2; exit 1; }
done
if leaks=$(grep -rlF -e "$PWD" -e "$build" "$prefix"/lib/cmake "$prefix"/include); then
  echo "cmake consumer: the installed package names the source or build tree:" >&2
  echo "$leaks" | sed 's/^/  /' >&2
  exit 1
fi

cp -r tests/cmake_consumer "$work/src"
if ! { cmake -S "$work/src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
         -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF &&
       cmake --build "$work/build"; } >"$work/log" 2>&1; then
  cat "$work/log" >&2
  echo "cmake consumer: tests/cmake_consumer does not build against the installed package" >&2
  exit 1
fi
KVPAGER_MODELS_DIR="$prefix/share/kvpager/models" "$work/build/kvpager_consumer"
