#!/usr/bin/env bash
# GPU runs of the tp layer (issue 9) on a one-GPU machine, all ranks on device 0.
# Needs a built tree in build/ (build/kvpager). Runs the tp gpu test, then the target
# benchmarks with --json. Writes one file, $OUT/tp/tp.jsonl (one line per run: {"label": ...,
# "result": <the bench's JSON>} or {"label": ..., "error": ...}); the log goes to stdout (which
# scripts/gpu/run.sh keeps as $OUT/tp/section.log) and a compact summary table comes last.
# Runs scripts/gpu/vmmprobe.sh first ($OUT/vmmprobe/). Takes about two minutes; every step is
# bounded by `timeout`. The device lock is off by default: "lock" runs turn it on.
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD_DIR:-build}
BIN=${KVPAGER_BIN:-$BUILD/kvpager}
BACKEND=${TP_BACKEND:-cuda}  # host: a dry run of this script on a machine without a GPU
# Issue 9 (one GPU): all ranks on device 0, 4 ranks. Issue 10 (several GPUs) reuses this script
# with TP_DEVICE_MODE=per-rank TP_SIZE=<gpus> MP_PROCS=<gpus> (scripts/gpu/multigpu.sh).
MODE=${TP_DEVICE_MODE:-same}
TP=${TP_SIZE:-4}
PROCS=${MP_PROCS:-4}
OUT=${OUT:-/tmp/kvpager-gpu-out}
mkdir -p "$OUT/tp"
JSONL="$OUT/tp/tp.jsonl"
: >"$JSONL"

{
  echo "== tp GPU runs, $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
  echo "cpus: $(nproc)"
}

# The per-handle VMM probe first (about 10-20 s): $OUT/vmmprobe/. TP_SKIP_PROBE=1 skips it.
if [ "${TP_SKIP_PROBE:-0}" != 1 ]; then
  VMMPROBE_BACKEND=$BACKEND OUT=$OUT bash scripts/gpu/vmmprobe.sh
fi

echo "== tp gpu test"
if [ -f "$BUILD/CTestTestfile.cmake" ]; then
  timeout 150 ctest --test-dir "$BUILD" -R '^tp_gpu_test$' --output-on-failure 2>&1 | tail -n 40
  [ "${PIPESTATUS[0]}" = 0 ] && echo "tp_gpu_test: passed" || echo "tp_gpu_test: FAILED"
fi

# run LABEL LIMIT_S ARGS...: one benchmark run, its JSON appended to tp.jsonl.
run() {
  local label=$1 limit=$2
  shift 2
  echo "== $label: $BIN $* --json"
  local out rc=0
  out=$(timeout "$limit" "$BIN" "$@" --json) || rc=$?
  if [ "$rc" = 0 ]; then
    echo "$out"
    printf '{"label":"%s","result":%s}\n' "$label" "$out" >>"$JSONL"
  else
    echo "   FAILED (exit $rc)"
    printf '{"label":"%s","error":"exit status %s, see the log"}\n' "$label" "$rc" >>"$JSONL"
  fi
}

IPC=(bench tp-ipc --backend "$BACKEND" --device-mode "$MODE" --pages-per-iter 1 --num-layers 32)
for impl in seq thread async shm; do
  run "tp-ipc tp$TP interleaved $impl" 60 "${IPC[@]}" --tp-size "$TP" --iters 200 --noop-iters 2000 \
    --layout interleaved --map-impl "$impl"
done
run "tp-ipc tp1 interleaved shm" 60 "${IPC[@]}" --tp-size 1 --iters 200 --noop-iters 2000 \
  --layout interleaved --map-impl shm
run "tp-ipc tp$TP per-layer shm" 60 "${IPC[@]}" --tp-size "$TP" --iters 40 --layout per-layer --map-impl shm
run "tp-ipc tp$TP per-layer seq" 60 "${IPC[@]}" --tp-size "$TP" --iters 40 --layout per-layer --map-impl seq
# The device lock is off by default since it lost every paired run; these show both sides.
run "tp-ipc tp$TP interleaved shm lock" 60 "${IPC[@]}" --tp-size "$TP" --iters 200 \
  --layout interleaved --map-impl shm --device-lock
run "tp-ipc tp$TP per-layer shm lock" 60 "${IPC[@]}" --tp-size "$TP" --iters 40 --layout per-layer \
  --map-impl shm --device-lock
# 16 consecutive pages per command: one set-access per run of pages (per tensor).
run "tp-ipc tp$TP interleaved shm 16 pages" 60 bench tp-ipc --backend "$BACKEND" --device-mode "$MODE" \
  --pages-per-iter 16 --num-layers 32 --tp-size "$TP" --iters 100 --layout interleaved --map-impl shm

MP=(bench map-parallel --backend "$BACKEND" --device-mode "$MODE" --pages-total 100 --procs "$PROCS" --num-layers 32)
run "map-parallel interleaved pool" 60 "${MP[@]}" --iters 20 --layout interleaved
run "map-parallel interleaved no-pool" 60 "${MP[@]}" --iters 20 --layout interleaved --no-pool
run "map-parallel interleaved pool lock" 60 "${MP[@]}" --iters 20 --layout interleaved --device-lock
run "map-parallel per-layer pool" 90 "${MP[@]}" --iters 8 --layout per-layer
run "map-parallel per-layer no-pool" 90 "${MP[@]}" --iters 4 --layout per-layer --no-pool

echo
echo "== summary (ms unless marked; targets from issue 9)"
python3 - "$JSONL" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(f"{'run':40} {'map':>9} {'unmap':>9} {'noop p50 us':>12}  target")
targets = {
    "tp-ipc tp$TP interleaved shm": "map<=0.20 unmap<=0.12 noop<=20us",
    "tp-ipc tp1 interleaved shm": "map<=0.06 unmap<=0.04",
    "tp-ipc tp$TP per-layer shm": "map<=10 unmap<=6",
}
for r in rows:
    label = r["label"]
    if "error" in r:
        print(f"{label:40} ERROR {r['error']}")
        continue
    j = r["result"]
    if j["bench"] == "tp-ipc":
        print(f"{label:40} {j['map_mean_ms']:9.3f} {j['unmap_mean_ms']:9.3f} "
              f"{j['noop_p50_us']:12.1f}  {targets.get(label, '')}")
print()
print(f"{'run':40} {'single':>9} {'serial':>9} {'parallel':>9} {'par/ser':>8}  target")
for r in rows:
    if "error" in r or r["result"]["bench"] != "map-parallel":
        continue
    j = r["result"]
    ratio = j["parallel_mean_ms"] / j["serial_mean_ms"]
    t = "serial<=3.0 par<=1.1x" if r["label"] == "map-parallel interleaved pool" else ""
    print(f"{r['label']:40} {j['single_mean_ms']:9.3f} {j['serial_mean_ms']:9.3f} "
          f"{j['parallel_mean_ms']:9.3f} {ratio:8.2f}  {t}")
PY
