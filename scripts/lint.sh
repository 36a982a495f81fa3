#!/usr/bin/env bash
# Format and lint checks (CI runs them from scripts/test.sh): every tracked C++/CUDA file is as
# the committed .clang-format writes it, and cppcheck finds no warning or error in the library,
# the command and the Python binding (false positives are suppressed inline, with the reason).
# Needs clang-format and cppcheck (scripts/setup.sh installs them). Exit 1 on a finding.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
mapfile -t files < <(git ls-files '*.cpp' '*.hpp' '*.cu' '*.cuh' | grep -v '/dlpack\.h$')
if ! clang-format --dry-run -Werror "${files[@]}" 2>/tmp/kvpager-format.$$; then
  echo "lint: files not formatted (clang-format -i FILE):"
  grep -o '^[^:]*' /tmp/kvpager-format.$$ | sort -u | sed 's/^/  /'
  status=1
fi
rm -f /tmp/kvpager-format.$$
if ! cppcheck -q --std=c++20 --language=c++ --enable=warning --inline-suppr --error-exitcode=1 \
    -I include -I src -I python/src src include python/src; then
  echo "lint: cppcheck found the above"
  status=1
fi
[ "$status" -eq 0 ] && echo "lint: clang-format and cppcheck clean (${#files[@]} files)"
exit "$status"
