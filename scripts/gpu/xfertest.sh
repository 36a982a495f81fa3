#!/usr/bin/env bash
# The CUDA transfer engine's gpu test alone (kvbench.sh without its benchmarks).
set -u
ctest --test-dir build -R '^transfer_cuda_test$' --output-on-failure 2>&1 | tail -n 25
