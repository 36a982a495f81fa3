#!/usr/bin/env bash
# Issue 22's vLLM serving benchmarks on the GPU machine, one piece per call (a call may run ~9
# minutes): stock vLLM, kvcached and kvpager as `vllm serve` processes (benchmarks/vllm_serving/).
#   scripts/gpu/vllm_bench.sh overhead   --rates 8 --duration 30 --rep 0 --together
#   scripts/gpu/vllm_bench.sh multimodel --rep 0 --slots 0:2       (then --slots 2:4, ...)
#   scripts/gpu/vllm_bench.sh prefix     --rep 0 --slots 0:2
# Everything after the benchmark goes to run.py (--enforce-eager for all systems, --systems ...).
# Before: the vLLM bundle in VLLM_SITE (default /tmp/site), kvcached built by
# scripts/gpu/kvcached_install.sh (run here when a kvcached system is asked for and it does not
# import), the kvpager command carried in .kvcli/ (scripts/gpu/cli_pack.sh). Builds the kvpager
# module for this python3 (build-py-standalone/) and installs kvpager's vLLM entry point.
# Results in $OUT/vllm_bench/: <bench>-<stamp>.jsonl.gz for each benchmark run (one line per
# run: pool the files of several calls with analyze.py; a plain <bench>.jsonl when the call was
# cut off before the end), <bench>-<stamp>.md (this call's tables), run.log, logs.tar.gz (each
# server's log tail, kvpager top captures), module_build.log. Set BENCH_TIMEOUT below the
# call's limit less the module build (about 60 s after a C++ change) and 40 s for the servers
# to stop.
# Env: BENCH_TIMEOUT (seconds, default 520: run.py gets SIGTERM then, stops its servers and
# writes what it has). Exit status: run.py's.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
bench=${1:?usage: vllm_bench.sh overhead|multimodel|prefix [run.py options]}; shift
OUT=${OUT:-/tmp/kvpager-out}
dir="$OUT/vllm_bench"
mkdir -p "$dir"
py=$(command -v python3)
site=${VLLM_SITE:-/tmp/site}
args=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DKVPAGER_WHEEL_CLI=OFF "-DPython3_EXECUTABLE=$py")
pb=$($py -m pybind11 --cmakedir 2>/dev/null) && args+=("-Dpybind11_DIR=$pb")
if ! { cmake -S python -B build-py-standalone "${args[@]}" >"$dir/module_build.log" 2>&1 &&
       cmake --build build-py-standalone -j "$(nproc)" >>"$dir/module_build.log" 2>&1; }; then
  echo "vllm_bench: kvpager module build failed"; tail -20 "$dir/module_build.log"; exit 1
fi
[ -x .kvcli/kvpager ] || { echo "vllm_bench: carry .kvcli (scripts/gpu/cli_pack.sh)"; exit 1; }
export KVPAGER_BINARY="$PWD/.kvcli/kvpager-run"
ep=/tmp/kvpager-vllm-ep
PYTHONPATH="$site:$PWD/build-py-standalone" $py -m kvpager.integrations.vllm --install-entry-point "$ep" >/dev/null
export PYTHONPATH="$ep:$site:$PWD/build-py-standalone" PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=0
if [[ " $* " != *" --systems "* || " $* " == *" kvcached"* ]] &&
   ! ENABLE_KVCACHED=true $py -c 'import kvcached.vmm_ops' 2>/dev/null; then
  scripts/gpu/kvcached_install.sh 2>&1 | tail -5
fi
stamp=$(date -u +%H%M%S)
work=/tmp/kvpager-vllm-bench-$stamp
echo "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1) commit $(git describe --always --dirty="-dirty (the tree differs from that commit)" 2>/dev/null)" | tee "$dir/run.log"
# run.py appends each run's record to $dir/<bench>.jsonl as it ends: a call cut off by the
# device's limit before this script finishes still brings back every run that completed.
timeout -s TERM -k 30 "${BENCH_TIMEOUT:-520}" "$py" benchmarks/vllm_serving/run.py "$bench" --out "$dir" \
  --work "$work" "$@" 2>&1 | tee -a "$dir/run.log" | grep -v '^(APIServer\|^(EngineCore' | tail -60
rc=${PIPESTATUS[0]}
"$KVPAGER_BINARY" gc >>"$dir/run.log" 2>&1
for records in "$dir"/*.jsonl; do  # the command's benchmark and each --then pass's
  [ -f "$records" ] || continue
  name=$(basename "$records" .jsonl)
  $py benchmarks/vllm_serving/analyze.py "$records" --markdown "$dir/$name-$stamp.md" >/dev/null 2>>"$dir/run.log"
  gzip -c "$records" >"$dir/$name-$stamp.jsonl.gz" && rm "$records"
done
# Whole server logs but their per-request access lines: start-up (each system's own messages, the
# KV sizes it chose), vLLM's 10-second stats (running, waiting, KV usage) and every error.
(cd "$work" && for f in *.log; do
   [ -f "$f" ] && grep -v '"POST /v1/completions HTTP' "$f" | tail -5000 >"kept-$f"
 done
 tar -czf "$dir/logs.tar.gz" kept-*.log kvpager_top_*.txt 2>/dev/null)
echo "vllm_bench: exit $rc; results in $dir: $(ls "$dir" | tr '\n' ' ')"
exit "$rc"
