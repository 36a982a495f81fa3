#!/usr/bin/env bash
# The kvpager command for a GPU call that has no full build there (vllm.sh's serve test runs
# `kvpager limit` / `list` against vllm serve): build/kvpager stripped, with the Debian shared
# libraries the device image lacks, into .kvcli/ (git-excluded; carry [".kvcli"]). There:
# KVPAGER_BINARY=.kvcli/kvpager-run (which sets LD_LIBRARY_PATH for kvpager alone; vllm.sh does).
set -euo pipefail
cd "$(dirname "$0")/../.."
cmake --build build --target kvpager >/dev/null
rm -rf .kvcli && mkdir -p .kvcli/lib
grep -qx '/.kvcli/' .git/info/exclude 2>/dev/null || echo '/.kvcli/' >>.git/info/exclude
strip --strip-unneeded -o .kvcli/kvpager build/kvpager
ldd build/kvpager | awk '/=> \//{print $3}' |
  grep -vE 'libc\.so|libm\.so|libpthread|libdl\.so|librt\.so|ld-linux|libcuda\.so|libstdc\+\+|libgcc_s|libcudart' |
  while read -r lib; do cp -L "$lib" .kvcli/lib/; done
cat >.kvcli/kvpager-run <<'RUN'
#!/usr/bin/env bash
# kvpager with its carried libraries (only for it: python's own must not see them)
here="$(cd "$(dirname "$0")" && pwd)"
LD_LIBRARY_PATH="$here/lib:${LD_LIBRARY_PATH:-}" exec "$here/kvpager" "$@"
RUN
chmod +x .kvcli/kvpager-run
du -sh .kvcli
