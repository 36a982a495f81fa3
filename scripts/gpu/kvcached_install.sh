#!/usr/bin/env bash
# On the GPU machine, after the vLLM bundle (VLLM_SITE, default /tmp/site): builds the carried
# kvcached source and posix_ipc in place against this machine's torch (`setup.py build_ext
# --inplace`, as kvcached's docs do for development) and makes them importable the way
# `pip install kvcached` does: a .pth in the user site-packages (else the first site dir) puts the trees on sys.path, and
# kvcached's own kvcached_autopatch.pth goes beside it (it arms the autopatch when vLLM is
# imported, under ENABLE_KVCACHED=true). wrapt is built only if python3 cannot import it.
# Prints the kvcached commit and `import kvcached` with vLLM. Exit status: 0 when importable.
set -euo pipefail
cd "$(dirname "$0")/../.."
kc="$PWD/.kvcached"
site=${VLLM_SITE:-/tmp/site}
[ -d "$kc/src/kvcached" ] || { echo "kvcached: carry .kvcached (scripts/gpu/kvcached_pack.sh)"; exit 1; }
work=/tmp/kvcached-build && rm -rf "$work" && mkdir -p "$work"
paths=()
build() {  # sdist -> built in place under $work; prints its directory
  tar -xzf "$1" -C "$work"
  local dir="$work/$(basename "$1" .tar.gz)"
  (cd "$dir" && python3 setup.py build_ext --inplace >"$work/$(basename "$dir").log" 2>&1) ||
    { tail -20 "$work/$(basename "$dir").log" >&2; return 1; }
  echo "$dir"
}
d=$(build "$kc"/deps/posix_ipc-*.tar.gz) || { echo "kvcached: posix_ipc build failed" >&2; exit 1; }
paths+=("$d")
if ! PYTHONPATH="$site" python3 -c 'import wrapt' 2>/dev/null; then
  d=$(build "$kc"/deps/wrapt-*.tar.gz) || { echo "kvcached: wrapt build failed" >&2; exit 1; }
  paths+=("$d/src")
fi
# built in a copy outside the checkout: a later call that carries .kvcached replaces the folder
cp -r "$kc/src" "$work/kvcached-src"
(cd "$work/kvcached-src" && PYTHONPATH="$site" python3 setup.py build_ext --inplace >"$work/kvcached.log" 2>&1) ||
  { tail -30 "$work/kvcached.log"; exit 1; }
paths+=("$work/kvcached-src")
# the user site-packages when python enables it, else the first site-packages directory
site_dir=$(python3 -c 'import site, sys
print(site.getusersitepackages() if site.ENABLE_USER_SITE else site.getsitepackages()[0])')
mkdir -p "$site_dir"
printf '%s\n' "${paths[@]}" >"$site_dir/kvcached-src.pth"
cp "$work/kvcached-src/kvcached_autopatch.pth" "$site_dir/"
echo "kvcached $(cut -c1-12 "$kc/COMMIT") built; paths in $site_dir/kvcached-src.pth"
PYTHONPATH="$site" ENABLE_KVCACHED=true KVCACHED_AUTOPATCH=1 python3 -c '
import kvcached, vllm, posix_ipc
print("kvcached", getattr(kvcached, "__version__", "?"), "vllm", vllm.__version__, "posix_ipc ok")'
