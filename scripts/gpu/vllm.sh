#!/usr/bin/env bash
# GPU run for the vLLM integration (issue 19), from the repo root, after the vLLM bundle was
# installed into /tmp/site (shared/vllm-bundle/README.md: two calls carrying .vb1 and .vb2):
#   1. builds kvpager._kvpager for this python3 (python/ standalone, build-py-standalone/); the
#      kvpager command comes carried in .kvcli/ (scripts/gpu/cli_pack.sh; the serve test needs it);
#   2. pytest tests/python/test_vllm_plan.py test_vllm_block_pool.py test_vllm_tp.py test_vllm_integration.py
#      test_vllm_serve.py: the pure parts, the block pool against vLLM's BlockPool, stock vLLM
#      against vLLM on kvpager (identity, attention kinds, two engines under one budget), and
#      vllm serve (/metrics, a live limit; needs .vb3, scripts/gpu/serve_wheels.sh).
# Env: VLLM_SITE (default /tmp/site). Results: $OUT/vllm/ (pytest log, each engine's JSON and
# log). Exit status: pytest's.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/kvpager-out}
dir="$OUT/vllm"
mkdir -p "$dir"
py=$(command -v python3)
args=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DKVPAGER_WHEEL_CLI=OFF "-DPython3_EXECUTABLE=$py")
pb=$($py -m pybind11 --cmakedir 2>/dev/null) && args+=("-Dpybind11_DIR=$pb")
if ! { cmake -S python -B build-py-standalone "${args[@]}" >"$dir/module_build.log" 2>&1 &&
       cmake --build build-py-standalone -j "$(nproc)" >>"$dir/module_build.log" 2>&1; }; then
  echo "vllm: kvpager module build failed (see $dir/module_build.log)"; tail -20 "$dir/module_build.log"; exit 1
fi
if [ -x .kvcli/kvpager ]; then  # scripts/gpu/cli_pack.sh, carried
  export KVPAGER_BINARY="$PWD/.kvcli/kvpager-run"
fi
export PYTHONPATH="${VLLM_SITE:-/tmp/site}:$PWD/build-py-standalone" PYTHONUNBUFFERED=1
export VLLM_USE_FLASHINFER_SAMPLER=0 KVPAGER_VLLM_TEST_OUT="$dir"
echo "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1) commit $(git rev-parse --short HEAD 2>/dev/null)"
$py -c 'import vllm, torch, kvpager; print("vllm", vllm.__version__, "torch", torch.__version__, "kvpager", kvpager.__version__)' 2>&1 | tail -1
$py -m pytest tests/python/test_vllm_plan.py tests/python/test_vllm_block_pool.py tests/python/test_vllm_tp.py \
  tests/python/test_vllm_integration.py tests/python/test_vllm_serve.py -q -rs -p no:cacheprovider "$@" 2>&1 | tee "$dir/pytest.log" | tail -60
exit "${PIPESTATUS[0]}"
