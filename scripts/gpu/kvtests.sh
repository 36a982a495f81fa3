#!/usr/bin/env bash
# The gpu-labelled vmm/kv tests alone (core.sh without its benchmarks): a quick check after
# changes to how pages are mapped.
set -u
ctest --test-dir build -L gpu -R 'vmm|kv_' --output-on-failure 2>&1 | tail -n 25
