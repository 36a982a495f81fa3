#!/usr/bin/env bash
# Issue 10 on a machine with several GPUs (nvidia-h100-x2/x4, h200-x2/x4), from the repo root
# (scripts/gpu/run.sh multigpu): one GPU per rank.
#   1. tp.sh with TP_DEVICE_MODE=per-rank, TP_SIZE = MP_PROCS = number of GPUs (max 4): tp-ipc
#      for seq/thread/async/shm, per-layer, lock variants, map-parallel interleaved + per-layer
#      -> $OUT/tp/tp.jsonl (the probe is skipped: it is a one-GPU question)
#   2. kvbench.sh with KVBENCH_DIRECTIONS=P2P: GPU0 -> GPU1 copies for the DeepSeek-R1 block and
#      layer plans next to cudaMemcpyPeer's peak -> $OUT/kvbench/kvbench_gpu.json
set -u
cd "$(dirname "$0")/../.."
gpus=$(nvidia-smi -L | wc -l)
[ "$gpus" -ge 2 ] || { echo "multigpu: $gpus GPU(s) here; this section needs two or more"; exit 1; }
n=$((gpus > 4 ? 4 : gpus))
echo "== multigpu: $gpus GPUs, one rank per GPU, $n ranks"
nvidia-smi topo -m 2>/dev/null | head -n $((gpus + 2))
TP_DEVICE_MODE=per-rank TP_SIZE=$n MP_PROCS=$n TP_SKIP_PROBE=1 bash scripts/gpu/tp.sh
mkdir -p "$OUT/kvbench"
KVBENCH_DIRECTIONS=P2P bash scripts/gpu/kvbench.sh
