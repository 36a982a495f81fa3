#!/usr/bin/env bash
# Runs on the GPU machine (device tool) after scripts/gpu/pack.sh here:
#   scripts/gpu/run.sh [section...]   sections: core batch kvbench tp limits python serving (default: all)
# Each section is scripts/gpu/<section>.sh; output goes under $OUT/<section>/.
set -u
cd "$(dirname "$0")/../.."
mkdir -p /tmp && ln -sfn "$PWD" /tmp/kvpager-gpu-src   # CTest files name the source dir
mkdir -p /work && [ -e /work/main ] || ln -sfn "$PWD" /work/main
[ -e build ] || ln -sfn build-gpu build
export LD_LIBRARY_PATH=$PWD/build-gpu/lib:${LD_LIBRARY_PATH:-}
export OUT=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
sections=("$@")
[ ${#sections[@]} -eq 0 ] && sections=(core batch kvbench tp limits python serving)
for s in "${sections[@]}"; do
  if [ -f "scripts/gpu/$s.sh" ]; then
    echo "=============== $s"
    mkdir -p "$OUT/$s"
    bash "scripts/gpu/$s.sh" 2>&1 | tee "$OUT/$s/section.log" | tail -n 60
  fi
done
