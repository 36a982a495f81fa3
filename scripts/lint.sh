#!/usr/bin/env bash
# Format and lint checks (CI runs them from scripts/test.sh): every tracked C++/CUDA file is as
# the committed .clang-format writes it, cppcheck finds no warning or error in the library,
# the command and the Python binding (false positives are suppressed inline, with the reason),
# ruff finds nothing in the Python files and mypy nothing in the kvpager package (both
# configured in pyproject.toml). Needs clang-format and cppcheck (scripts/setup.sh installs
# them); ruff and mypy (Debian 12 packages neither) come from PyPI, at the versions pinned here,
# into a virtual environment of their own (LINT_VENV, default build-lint/venv; kept while the
# pins match; --prepare installs them and stops). Exit 1 on a finding.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
RUFF_VERSION=0.17.6
MYPY_VERSION=2.4.1
venv=${LINT_VENV:-build-lint/venv}
install_python_tools() {
  local pins="ruff==$RUFF_VERSION mypy==$MYPY_VERSION"
  [ "$(cat "$venv/pins" 2>/dev/null)" = "$pins" ] && return 0
  rm -rf "$venv"
  # shellcheck disable=SC2086 # two requirements
  if ! /usr/bin/python3 -m venv "$venv" ||
    ! "$venv/bin/pip" install -q --disable-pip-version-check $pins; then
    echo "lint: cannot install $pins into $venv" >&2
    return 1
  fi
  echo "$pins" >"$venv/pins"
}
# --prepare: only install ruff and mypy (network: scripts/test.sh does it while build/ compiles)
if [ "${1:-}" = --prepare ]; then
  install_python_tools
  exit
fi
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
install_python_tools || exit 1
if ! "$venv/bin/ruff" check -q .; then
  echo "lint: ruff found the above (pyproject.toml [tool.ruff])"
  status=1
fi
if ! "$venv/bin/mypy" --no-error-summary; then
  echo "lint: mypy found the above (pyproject.toml [tool.mypy])"
  status=1
fi
[ "$status" -eq 0 ] &&
  echo "lint: clang-format, cppcheck, ruff and mypy clean (${#files[@]} C++/CUDA files)"
exit "$status"
