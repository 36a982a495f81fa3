#!/usr/bin/env bash
# Core (issue 2) on the GPU: gpu-labelled vmm/kv tests, bench vmm, bench alloc, a short demo.
set -u
out=$OUT/core
# every test's own lines (gtest's [ RUN ] / [ OK ] per case) in ctest.log; the summary here
ctest --test-dir build -L gpu -R 'vmm|kv_' -V >"$out/ctest.log" 2>&1
grep -E '^\s*[0-9]+/[0-9]+ Test|tests passed|FAILED' "$out/ctest.log" | tail -n 25
build/kvpager bench vmm --json > "$out/bench_vmm.json" 2>&1
build/kvpager bench vmm --iters 200
build/kvpager bench alloc --json > "$out/bench_alloc.json" 2>&1
build/kvpager bench alloc
build/kvpager demo --duration 8 --capacity 16GiB 2>&1 | tail -n 12
