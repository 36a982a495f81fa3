#!/usr/bin/env bash
# GPU probe of per-handle VMM cost (issue 9): `kvpager bench vmm-probe`, about 10-20 s.
# Writes $OUT/vmmprobe/vmmprobe.json (the probe's JSON), vmmprobe.stderr and
# summary.txt (the rows that answer issue 9's questions). `scripts/gpu/run.sh vmmprobe` runs it
# alone; scripts/gpu/tp.sh runs it first. VMMPROBE_BACKEND=host: a dry run without a GPU.
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD_DIR:-build}
BIN=${KVPAGER_BIN:-$BUILD/kvpager}
BACKEND=${VMMPROBE_BACKEND:-cuda}
SAMPLES=${VMMPROBE_SAMPLES:-200}
OUT=${OUT:-/tmp/kvpager-gpu-out}
DIR="$OUT/vmmprobe"
mkdir -p "$DIR"
echo "== vmm-probe, $(date -u +%FT%TZ), backend $BACKEND"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true
rc=0
timeout 90 "$BIN" bench vmm-probe --backend "$BACKEND" --samples "$SAMPLES" --json \
  >"$DIR/vmmprobe.json" 2>"$DIR/vmmprobe.stderr" || rc=$?
if [ "$rc" != 0 ]; then
  echo "vmm-probe FAILED (exit $rc)"
  tail -n 20 "$DIR/vmmprobe.stderr"
  exit 0
fi
python3 - "$DIR/vmmprobe.json" <<'PY' | tee "$DIR/summary.txt"
import json, sys
j = json.load(open(sys.argv[1]))
print(f"backend {j['backend']}, {j['samples']} samples per row, {j['elapsed_s']:.1f} s")
print(f"{'section':12} {'case':52} {'map+acc':>8} {'p50':>7} {'p99':>7} {'acc':>7} {'unmap':>7} {'p50':>7} {'p99':>7}")
for r in j["rows"]:
    m, a, u = r["map_access_us"], r["access_us"], r["unmap_us"]
    print(f"{r['section']:12} {r['case'][:52]:52} {m['mean']:8.1f} {m['p50']:7.1f} {m['p99']:7.1f} "
          f"{a['mean']:7.1f} {u['mean']:7.1f} {u['p50']:7.1f} {u['p99']:7.1f}")
print("\ncoalesce: N contiguous handles, one set-access (us) / per handle; unmap each vs one call")
for c in j["coalesce"]:
    one = f"{c['one_unmap_us']['mean']:.1f}" if c["one_unmap_supported"] else "refused: " + c.get("one_unmap_error", "")[:60]
    print(f"  N={c['handles']:3}  set-access {c['one_set_access_us']['mean']:8.1f} "
          f"({c['set_access_per_handle_us']:6.1f}/handle)  unmap each {c['unmap_each_total_us']['mean']:8.1f}  one unmap {one}")
print("\n4 processes: round wall per handle (us), map+access / unmap")
for t in j["turns"]:
    print(f"  {t['case']:45} {t['round_wall_per_handle_map_access_us']['mean']:8.1f} "
          f"{t['round_wall_per_handle_unmap_us']['mean']:8.1f}")
ft = j["first_touch"].get("first_20_cycles", {})
if ft:
    print("\nprocess' first 20 set-access calls (us):", " ".join(f"{x:.0f}" for x in ft["access_us"]))
PY
