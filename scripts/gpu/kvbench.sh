#!/usr/bin/env bash
# GPU run for kvbench / the transfer engine (issue 3), on a machine with a CUDA GPU and a built
# tree in build/ (build/kvpager, build/tests/bench/transfer/*); normally started by
# scripts/gpu/run.sh kvbench, which keeps this output in $OUT/kvbench/section.log.
#   1. ctest -L gpu -R 'transfer|kvbench': CUDA engine DRAM<->VRAM, VRAM<->VRAM, tp shards and
#      VMM memory exported by another process, every byte checked, for every copy engine
#      (per-block, batch, kernel; odd sizes, skewed offsets, many small blocks)
#   2. cudaMemcpy's peak (H2D, D2H, D2D; 256 MiB copies, pinned host memory)
#   3. kvpager bench xfer --backend CUDA for the seed's DeepSeek-R1 plans (block: 589824 B x
#      5958, layer: 147456 B x 23829; from `kvpager kvbench plan`), H2D / D2H / D2D, and D2D
#      into VMM memory of a second process (--cuda_ipc), once per --copy_engine
#      (per-block, batch, kernel); then the block plan once more with the default engine and
#      --check_consistency (H2D, D2H, D2D: every byte of the real plan verified)
# Writes $OUT/kvbench/kvbench_gpu.json (all figures) and prints a summary table last (ratio =
# kvpager / cudaMemcpy peak of the same direction; IPC is compared with D2D).
# Exit status 0 only if the tests passed and every run succeeded (batch on a driver without
# cuMemcpyBatchAsync is reported as n/a, not a failure). About 3 minutes on an H100.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT/kvbench"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
K=build/kvpager
[ -x "$K" ] || K=build/src/cli/kvpager
PEAK=build/tests/bench/transfer/kvpager_cuda_memcpy_peak
[ -x "$PEAK" ] || cmake --build build --target kvpager_cuda_memcpy_peak >/dev/null 2>&1
ENGINES=(per-block batch kernel)
gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
# KVBENCH_DIRECTIONS overrides; GPU<->GPU (P2P, device 0 -> 1) needs two GPUs (issue 10).
DIRECTIONS=${KVBENCH_DIRECTIONS:-H2D D2H D2D IPC$([ "$gpus" -ge 2 ] && echo " P2P")}

echo "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
echo "== ctest --test-dir build -L gpu -R 'transfer|kvbench' --output-on-failure"
ctest --test-dir build -L gpu -R 'transfer|kvbench' --output-on-failure
test_rc=$?
skipped=$(grep -c '^\[  SKIPPED \] [A-Za-z]' build/Testing/Temporary/LastTest.log 2>/dev/null || echo 0)

echo "== $PEAK $((256 << 20)) 20"
"$PEAK" $((256 << 20)) 20 | tee "$tmp/peak.jsonl"
peak_rc=${PIPESTATUS[0]}

# The plans, as kvbench computes them (fails loudly if the math changed).
plan() {  # model_config -> "block batch"
  "$K" kvbench plan --model deepseek-r1 --model_config "models/examples/$1" --format json |
    python3 -c 'import json,sys; p=json.load(sys.stdin)[0]; print(p["max_block_size"], p["max_batch_size"])'
}
segs_of() {  # direction plan-name -> segment flags in $segs
  case $1 in
    H2D) segs=(--initiator_seg_type DRAM --target_seg_type VRAM) ;;
    D2H) segs=(--initiator_seg_type VRAM --target_seg_type DRAM) ;;
    D2D) segs=(--initiator_seg_type VRAM --target_seg_type VRAM) ;;
    IPC) segs=(--initiator_seg_type VRAM --target_seg_type VRAM --cuda_ipc --spawn_local
               --benchmark_group "kvbench-gpu-$2-$$-$RANDOM") ;;
    P2P) segs=(--initiator_seg_type VRAM --target_seg_type VRAM --device_list 0,1) ;;
  esac
}
runs_rc=0
bench() {  # output-stem block batch iterations warmup extra-flags...
  local stem=$1 block=$2 batch=$3 iter=$4 warm=$5
  shift 5
  echo "== $K bench xfer --backend CUDA $* --start_block_size $block --max_block_size $block --start_batch_size $batch --max_batch_size $batch --total_buffer_size 4G --num_iter $iter --warmup_iter $warm"
  if ! "$K" bench xfer --backend CUDA "$@" --start_block_size "$block" \
      --max_block_size "$block" --start_batch_size "$batch" --max_batch_size "$batch" \
      --total_buffer_size 4G --num_iter "$iter" --warmup_iter "$warm" \
      --json "$tmp/$stem.json" 2> >(tee "$tmp/$stem.err" >&2); then
    if grep -q 'cuMemcpyBatchAsync of a CUDA 13 driver' "$tmp/$stem.err"; then
      echo unavailable >"$tmp/$stem.na"
    else
      runs_rc=1
    fi
  fi
}
for name in block layer; do
  read -r block batch < <(plan "$name-tp1-pp16.yaml") || { echo "plan $name failed"; runs_rc=1; continue; }
  echo "$block $batch" >"$tmp/$name.plan"
  for dir in $DIRECTIONS; do
    for engine in "${ENGINES[@]}"; do
      segs_of "$dir" "$name"
      bench "$name-$dir-$engine" "$block" "$batch" 10 2 "${segs[@]}" --copy_engine "$engine"
    done
  done
done
# Every byte of the real block plan, default engine (untimed figures not reported).
if [ -f "$tmp/block.plan" ]; then
  read -r block batch <"$tmp/block.plan"
  for dir in H2D D2H D2D; do
    segs_of "$dir" block
    bench "verify-$dir" "$block" "$batch" 1 0 "${segs[@]}" --check_consistency
  done
fi

python3 - "$tmp" "$OUT/kvbench/kvbench_gpu.json" "$test_rc" "$skipped" "${ENGINES[@]}" <<'PY'
import json, os, sys
tmp, out, test_rc, skipped, engines = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5:]
peak = {}
if os.path.exists(f"{tmp}/peak.jsonl"):
    for line in open(f"{tmp}/peak.jsonl"):
        if line.strip().startswith("{"):
            p = json.loads(line); peak[p["direction"]] = p["gb_per_s"]
rows = []
for name in ("block", "layer"):
    for d in ("H2D", "D2H", "D2D", "IPC", "P2P"):
        for e in engines:
            stem = f"{tmp}/{name}-{d}-{e}"
            base = {"plan": name, "direction": d, "copy_engine": e}
            if not any(os.path.exists(stem + x) for x in (".err", ".json", ".na")):
                continue  # direction not run here (P2P needs two GPUs)
            if os.path.exists(stem + ".na"):
                rows.append({**base, "error": "n/a (driver lacks cuMemcpyBatchAsync)"}); continue
            if not os.path.exists(stem + ".json"):
                rows.append({**base, "error": "run failed"}); continue
            j = json.load(open(stem + ".json"))
            r = j["rows"][-1]
            ref = peak.get("D2D" if d == "IPC" else d)
            rows.append({**base, "description": j.get("description", ""),
                         "block_size": r["block_size"], "batch_size": r["batch_size"],
                         "gb_per_s": round(r["bw_gb_per_s"], 3),
                         "avg_latency_us": round(r["avg_latency_us"], 1),
                         "cudamemcpy_peak_gb_per_s": ref,
                         "ratio": round(r["bw_gb_per_s"] / ref, 3) if ref else None})
verify = {}
for d in ("H2D", "D2H", "D2D"):
    f = f"{tmp}/verify-{d}.json"
    if os.path.exists(f):
        j = json.load(open(f))
        verify[d] = {"description": j.get("description", ""),
                     "mismatches": sum(r.get("mismatched_bytes", 0) for r in j["rows"])}
    else:
        verify[d] = {"error": "run failed (see the log: a mismatch fails the run)"}
json.dump({"tests_rc": test_rc, "skipped": skipped, "cudamemcpy_peak": peak, "runs": rows,
           "check_consistency_block_plan": verify}, open(out, "w"), indent=2)
print("== summary (kvbench transfer, issue 3; target: ratio >= 0.90)")
print(f"gpu tests: {'PASS' if test_rc == 0 else f'FAIL (rc {test_rc})'}; skipped test cases: {skipped}")
print("check_consistency, block plan, default engine: " +
      ", ".join(f"{d} {'OK' if v.get('mismatches') == 0 else v.get('error', v.get('mismatches'))}"
                for d, v in verify.items()))
print(f"{'plan':6} {'dir':4} {'engine':10} {'block':>7} {'batch':>6} {'GB/s':>9} {'peak GB/s':>10} {'ratio':>6}")
for r in rows:
    if "error" in r:
        print(f"{r['plan']:6} {r['direction']:4} {r['copy_engine']:10} {r['error']}"); continue
    print(f"{r['plan']:6} {r['direction']:4} {r['copy_engine']:10} {r['block_size']:>7} {r['batch_size']:>6} "
          f"{r['gb_per_s']:>9.2f} {r['cudamemcpy_peak_gb_per_s'] or 0:>10.2f} {r['ratio'] or 0:>6.3f}")
PY
echo "peak rc $peak_rc, bench runs rc $runs_rc; results: $OUT/kvbench/kvbench_gpu.json"
[ "$test_rc" -eq 0 ] && [ "$peak_rc" -eq 0 ] && [ "$runs_rc" -eq 0 ]
