#!/usr/bin/env bash
# The README's two commands in either order run the whole suite (issue 21 item 2): configures a
# scratch build directory the way scripts/demo.sh does, then the way scripts/test.sh does (the
# flags are read from the scripts themselves), and requires CTest to find tests; then the other
# order, and that test.sh lets ctest fail when it finds none. Configure only: nothing is built.
# Usage: readme_order_test.sh SOURCE_DIR
set -euo pipefail
src=${1:?source dir}
flags_of() {  # the extra cmake arguments a script passes to scripts/setup.sh (its first call)
  sed -n 's|^[[:space:]]*scripts/setup.sh[[:space:]]*||p' "$src/scripts/$1" | head -1
}
demo_flags=$(flags_of demo.sh)
test_flags=$(flags_of test.sh)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
configure() {  # as setup.sh does (its cmake line), with the script's flags
  # shellcheck disable=SC2086
  cmake -S "$src" -B "$tmp/build" -G Ninja -DKVPAGER_CUDA=OFF -DKVPAGER_BUILD_PYTHON=OFF $1 \
    >"$tmp/configure.log" 2>&1 || { cat "$tmp/configure.log"; exit 1; }
}
count_tests() { ctest --test-dir "$tmp/build" -N | sed -n 's/^Total Tests: //p'; }
configure "$demo_flags"
configure "$test_flags"
n=$(count_tests)
[ "${n:-0}" -gt 0 ] || { echo "demo.sh then test.sh: CTest finds no tests"; exit 1; }
rm -rf "$tmp/build"
configure "$test_flags"
m=$(count_tests)
configure "$demo_flags"
configure "$test_flags"
[ "$(count_tests)" = "$m" ] || { echo "test.sh, demo.sh, test.sh: a different suite"; exit 1; }
grep -q -- "--no-tests=error" "$src/scripts/test.sh" || { echo "test.sh's ctest accepts no tests"; exit 1; }
echo "README order: $n tests either way"
