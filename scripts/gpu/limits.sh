#!/usr/bin/env bash
# Limits (issue 6) on the GPU: the gpu-labelled limits test, then `kvpager demo` with three
# model processes sharing the GPU under one budget (CUDA backend). Files under $OUT/limits/:
# section.log (written by run.sh) and demo.txt (the demo's full output). Summary printed last.
set -u
out=$OUT/limits
mkdir -p "$out"
echo "== ctest -L gpu -R limits"
ctest --test-dir build -L gpu -R limits --output-on-failure 2>&1 | tail -n 15
echo "== kvpager demo on CUDA (3 instances, 4 GiB budget)"
start=$(date +%s.%N)
build/kvpager demo --backend cuda --duration 20 --capacity 16GiB --budget 4GiB --peak-rate 24 \
  --prefix kvpager-gpudemo- > "$out/demo.txt" 2>&1
rc=$?
end=$(date +%s.%N)
grep -m1 '^kvpager demo' "$out/demo.txt"
sed -n '/=== demo summary/,$p' "$out/demo.txt"
echo "== summary: demo exit $rc, $(awk "BEGIN{printf \"%.1f\", $end-$start}") s wall; full output $out/demo.txt"
