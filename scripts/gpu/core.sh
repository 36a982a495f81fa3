#!/usr/bin/env bash
# Core (issue 2) on the GPU: gpu-labelled vmm/kv tests, bench vmm, bench alloc, a short demo.
set -u
out=$OUT/core
ctest --test-dir build -L gpu -R 'vmm|kv_' --output-on-failure 2>&1 | tail -n 25
build/kvpager bench vmm --json > "$out/bench_vmm.json" 2>&1
build/kvpager bench vmm --iters 200
build/kvpager bench alloc --json > "$out/bench_alloc.json" 2>&1
build/kvpager bench alloc
build/kvpager demo --duration 8 --capacity 16GiB 2>&1 | tail -n 12
