#!/usr/bin/env bash
# GPU run for the serving engine (issue 11), from the repo root (scripts/gpu/run.sh serving),
# after the python section in the same call (it reuses the module python.sh built; else it
# builds python/ standalone for this python3):
#   1. pytest tests/python/test_transformers_integration.py on CUDA: greedy tokens and logits
#      identical to stock memory (GQA and MHA shapes, both layouts), memory mapped on demand and
#      returned, a limit honoured, registry, compatibility check
#   2. benchmarks/serving/bench.py layout     (attention microbench + closed-loop throughput)
#   3. benchmarks/serving/bench.py overhead   (Llama-3.1-8B shape, three Poisson rates)
#   4. examples/serve_three_models.py         (three models, three processes, one budget;
#                                              static thirds vs elastic; idle footprint; top)
# Env: SERVING_PARTS (default "test layout overhead multimodel"; also multimodel-heavy and
# multimodel-steady; a part
# named twice runs twice), OVERHEAD_RATES/REPEAT/TAG/TIMEOUT, MULTIMODEL_TIMEOUT, MULTIMODEL_ARGS (more options
# for the example, e.g. "--budget-gib 1.5 --peak-rate 4"). Results: $OUT/serving/*.json,
# plots $OUT/serving/img/*.png, logs. Exit status: 0 only if every part ran and tests passed.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/kvpager-out}
dir="$OUT/serving"
mkdir -p "$dir/img"
py=$(command -v python3)
ext=$($py -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
pkg=""
for d in build-py/python build-py-standalone; do  # built here from this tree (python.sh or below)
  [ -f "$d/kvpager/_kvpager$ext" ] && { pkg=$d; break; }
done
if [ -n "$pkg" ]; then
  cmake --build "${pkg%/python}" -j "$(nproc)" >"$dir/module_build.log" 2>&1  # restage the .py files
else
  args=(-G Ninja -DCMAKE_BUILD_TYPE=Release "-DPython3_EXECUTABLE=$py")
  pb=$($py -m pybind11 --cmakedir 2>/dev/null) && args+=("-Dpybind11_DIR=$pb")
  cmake -S python -B build-py-standalone "${args[@]}" >"$dir/module_build.log" 2>&1 &&
    cmake --build build-py-standalone -j "$(nproc)" >>"$dir/module_build.log" 2>&1 &&
    pkg=build-py-standalone
fi
[ -n "$pkg" ] || { echo "serving: no kvpager module for $py (see $dir/module_build.log)"; exit 1; }
export PYTHONPATH="$PWD/$pkg" KVPAGER_BINARY="$PWD/build/kvpager" KVPAGER_SOURCE_DIR="$PWD"
export PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error
echo "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)"
echo "== $py $($py -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'), module $pkg"
parts=${SERVING_PARTS:-test layout overhead multimodel}
rc=0 mm=0 mh=0 ms=0
suffix() { [ "$1" -gt 1 ] && echo "$1"; }  # nth run of a part: "" for the first, else n
run() {  # name timeout command...
  local name=$1 limit=$2; shift 2
  echo "== $name: $*"
  local t=$SECONDS
  timeout "$limit" "$@" 2>&1 | grep --line-buffered -v -E 'Warning|warn\(|^\s*$' | tee "$dir/$name.log" | tail -n 25
  local r=${PIPESTATUS[0]}
  echo "== $name: rc $r, $((SECONDS - t)) s"
  [ "$r" -eq 0 ] || rc=1
}
for part in $parts; do
  case $part in
    test)
      per_test=()
      $py -c 'import pytest_timeout' 2>/dev/null && per_test=(--timeout 150)
      run test 420 $py -m pytest tests/python/test_transformers_integration.py -q -rs \
        -p no:cacheprovider "${per_test[@]}" ;;
    layout) run layout 330 $py benchmarks/serving/bench.py layout --model llama-3.1-8b --repeat 2 \
      --num-blocks 4096 --requests 64 --input-len 256 512 --output-len 64 128 \
      --json "$dir/layout.json" ;;
    overhead) run overhead ${OVERHEAD_TIMEOUT:-330} $py benchmarks/serving/bench.py overhead --model llama-3.1-8b \
      --num-blocks 4096 --rates ${OVERHEAD_RATES:-1 4 10} --repeat ${OVERHEAD_REPEAT:-2} --duration 12 \
      --input-len 256 512 --output-len 64 128 --json "$dir/overhead${OVERHEAD_TAG:-}.json" \
      --plots "$dir/img" ;;
    multimodel) mm=$((mm + 1)); tag=$(suffix $mm)  # a repeat writes multimodel2.json, img2/, ...
      run multimodel$tag ${MULTIMODEL_TIMEOUT:-340} $py examples/serve_three_models.py --json "$dir/multimodel$tag.json" \
      --plots "$dir/img$tag" ${MULTIMODEL_ARGS:-} ;;
    # the same with a heavier trickle between peaks: an earlier burst's backlog still runs when
    # the next model's peak starts (what guarantees are for)
    multimodel-heavy) mh=$((mh + 1)); tag=$(suffix $mh)
      run multimodel-heavy$tag ${MULTIMODEL_TIMEOUT:-340} $py examples/serve_three_models.py --low-rate 1.0 \
      --json "$dir/multimodel_heavy$tag.json" --plots "$dir/img_heavy$tag" ${MULTIMODEL_ARGS:-} ;;
    # steady low load: no peaks, every model at 1 request/s for 60 s (no backlog from a peak
    # competes for the GPU): what elastic memory costs when nothing needs to borrow
    multimodel-steady) ms=$((ms + 1)); tag=$(suffix $ms)
      run multimodel-steady$tag ${MULTIMODEL_TIMEOUT:-340} $py examples/serve_three_models.py --phase-s 0 \
      --quiet-s 60 --low-rate 1.0 --json "$dir/multimodel_steady$tag.json" --plots "$dir/img_steady$tag" \
      ${MULTIMODEL_ARGS:-} ;;
  esac
done
exit $rc
