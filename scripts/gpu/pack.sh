#!/usr/bin/env bash
# Builds committed HEAD for the GPU machine (which lacks the Debian dev packages) into
# build-gpu/, with the shared libraries it needs in build-gpu/lib, small enough to carry
# (device tool: carry ["build-gpu"]). Then on the device: scripts/gpu/run.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
src=/tmp/kvpager-gpu-src
rm -rf "$src" && git clone -q . "$src"
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
cmake -S "$src" -B "$root/build-gpu" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DKVPAGER_BUILD_PYTHON=OFF -DCMAKE_CUDA_ARCHITECTURES=90 "${launcher[@]}" >/dev/null
cmake --build "$root/build-gpu" -j "$(nproc)"
mkdir -p build-gpu/lib
# Shared libraries from Debian that the device image does not have.
find build-gpu -type f -perm -u+x -not -path '*/CMakeFiles/*' -not -path '*/lib/*' | while read -r bin; do
  ldd "$bin" 2>/dev/null | awk '/=> \//{print $3}' | grep -vE 'libc\.so|libm\.so|libpthread|libdl\.so|librt\.so|ld-linux|libcuda\.so|libstdc\+\+|libgcc_s' || true
done | sort -u | while read -r lib; do cp -L "$lib" build-gpu/lib/; done
find build-gpu -type f -perm -u+x -not -path '*/CMakeFiles/*' -exec strip --strip-unneeded {} + 2>/dev/null || true
rm -rf build-gpu/CMakeFiles/*.log build-gpu/CMakeFiles/CheckCUDA build-gpu/CMakeFiles/*/CompilerId*/tmp  # CMake's probes: 8 MiB
find build-gpu \( -name "*.a" -o -name "*.o" \) -delete  # not needed to run; keeps the carry small
du -sh build-gpu
echo "source: $src (commit $(git -C "$src" rev-parse --short HEAD))"
