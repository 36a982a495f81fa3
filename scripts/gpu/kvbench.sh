#!/usr/bin/env bash
# GPU run for kvbench / the transfer layer (issue 3), on a machine with a CUDA GPU and a built
# tree in build/ (build/kvpager, build/tests/transfer/*); normally started by
# scripts/gpu/run.sh kvbench, which keeps this output in $OUT/kvbench/section.log.
#   1. ctest -L gpu -R 'transfer|kvbench': CUDA engine DRAM<->VRAM, VRAM<->VRAM, tp shards and
#      VMM memory exported by another process, every byte checked
#   2. cudaMemcpy's peak (H2D, D2H, D2D; 256 MiB copies, pinned host memory)
#   3. kvpager bench xfer --backend CUDA for the seed's DeepSeek-R1 plans (block: 589824 B x
#      5958, layer: 147456 B x 23829; from `kvpager kvbench plan`), H2D / D2H / D2D, and D2D
#      into VMM memory of a second process (--cuda_ipc)
# Writes $OUT/kvbench/kvbench_gpu.json (all figures) and prints a summary table last.
# Exit status 0 only if the tests passed and every run succeeded.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT/kvbench"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
K=build/kvpager
[ -x "$K" ] || K=build/src/cli/kvpager
PEAK=build/tests/transfer/kvpager_cuda_memcpy_peak
[ -x "$PEAK" ] || cmake --build build --target kvpager_cuda_memcpy_peak >/dev/null 2>&1

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
runs_rc=0
for name in block layer; do
  read -r block batch < <(plan "$name-tp1-pp16.yaml") || { echo "plan $name failed"; runs_rc=1; continue; }
  for dir in H2D D2H D2D IPC; do
    case $dir in
      H2D) segs=(--initiator_seg_type DRAM --target_seg_type VRAM) ;;
      D2H) segs=(--initiator_seg_type VRAM --target_seg_type DRAM) ;;
      D2D) segs=(--initiator_seg_type VRAM --target_seg_type VRAM) ;;
      IPC) segs=(--initiator_seg_type VRAM --target_seg_type VRAM --cuda_ipc --spawn_local
                 --benchmark_group "kvbench-gpu-$name-$$") ;;
    esac
    echo "== $K bench xfer --backend CUDA ${segs[*]} --start_block_size $block --max_block_size $block --start_batch_size $batch --max_batch_size $batch --total_buffer_size 4G --num_iter 10 --warmup_iter 2"
    "$K" bench xfer --backend CUDA "${segs[@]}" --start_block_size "$block" \
      --max_block_size "$block" --start_batch_size "$batch" --max_batch_size "$batch" \
      --total_buffer_size 4G --num_iter 10 --warmup_iter 2 --json "$tmp/$name-$dir.json" ||
      runs_rc=1
  done
done

python3 - "$tmp" "$OUT/kvbench/kvbench_gpu.json" "$test_rc" "$skipped" <<'PY'
import glob, json, os, sys
tmp, out, test_rc, skipped = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
peak = {}
if os.path.exists(f"{tmp}/peak.jsonl"):
    for line in open(f"{tmp}/peak.jsonl"):
        if line.strip().startswith("{"):
            p = json.loads(line); peak[p["direction"]] = p["gb_per_s"]
rows = []
for name in ("block", "layer"):
    for d in ("H2D", "D2H", "D2D", "IPC"):
        f = f"{tmp}/{name}-{d}.json"
        if not os.path.exists(f):
            rows.append({"plan": name, "direction": d, "error": "run failed"}); continue
        r = json.load(open(f))["rows"][-1]
        ref = peak.get("D2D" if d == "IPC" else d)
        rows.append({"plan": name, "direction": d, "block_size": r["block_size"],
                     "batch_size": r["batch_size"], "gb_per_s": round(r["bw_gb_per_s"], 3),
                     "avg_latency_us": round(r["avg_latency_us"], 1),
                     "cudamemcpy_peak_gb_per_s": ref,
                     "ratio": round(r["bw_gb_per_s"] / ref, 3) if ref else None})
json.dump({"tests_rc": test_rc, "skipped": skipped, "cudamemcpy_peak": peak, "runs": rows},
          open(out, "w"), indent=2)
print("== summary (kvbench transfer, issue 3)")
print(f"gpu tests: {'PASS' if test_rc == 0 else f'FAIL (rc {test_rc})'}; skipped test cases: {skipped}")
print(f"{'plan':6} {'dir':4} {'block':>8} {'batch':>6} {'kvpager GB/s':>13} {'cudaMemcpy GB/s':>16} {'ratio':>6}")
for r in rows:
    if "error" in r:
        print(f"{r['plan']:6} {r['direction']:4} {'run failed':>8}"); continue
    print(f"{r['plan']:6} {r['direction']:4} {r['block_size']:>8} {r['batch_size']:>6} "
          f"{r['gb_per_s']:>13.2f} {r['cudamemcpy_peak_gb_per_s'] or 0:>16.2f} {r['ratio'] or 0:>6.2f}")
PY
echo "peak rc $peak_rc, bench runs rc $runs_rc; results: $OUT/kvbench/kvbench_gpu.json"
[ "$test_rc" -eq 0 ] && [ "$peak_rc" -eq 0 ] && [ "$runs_rc" -eq 0 ]
