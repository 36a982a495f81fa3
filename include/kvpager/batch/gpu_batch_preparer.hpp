#pragma once
// The GPU path: the free-block stack, reference counts and per-sequence block rows live in
// device memory; each step the host writes a small descriptor (the Step) to pinned memory,
// enqueues one H2D copy of it and two kernels: `update` (one thread block: forks, block
// allocation, frees, and the per-row metadata) and `pack` (one thread block per batch row:
// new row entries, block_table, paged_kv_indices, slot_mapping). No host round trip, no
// allocation and no synchronisation inside a step, so a step can be captured in a CUDA graph
// (capture_graph / prepare_graph). Given the same config and steps, its metadata and block
// ids equal BlockTableManager's with a FreeListBlockSource.
//
// Errors: bad input is caught on the host against a shadow of the sequence lengths
// (InvalidArgument, nothing changed). Block exhaustion is found on the device: that step and
// every later one become no-ops (their metadata describes an empty batch: zero lengths,
// slot_mapping -1) and the next synchronize() throws OutOfMemory after restoring the host
// shadow, leaving the preparer as it was before the failing step.
// Needs a CUDA device and a build with CUDA kernels (Error otherwise). Not thread-safe.
#include <cstdint>
#include <memory>
#include <vector>

#include <cuda_runtime_api.h>

#include "kvpager/batch/attention_metadata.hpp"
#include "kvpager/batch/batch_config.hpp"
#include "kvpager/batch/block_table_manager.hpp"
#include "kvpager/batch/step.hpp"

namespace kvpager::batch {

// False when kvpager was built without nvcc (KVPAGER_HAVE_CUDA_KERNELS off).
bool gpu_kernels_built();

class GpuBatchPreparer {
 public:
  explicit GpuBatchPreparer(const BatchConfig& config);  // on the current CUDA device
  ~GpuBatchPreparer();
  GpuBatchPreparer(const GpuBatchPreparer&) = delete;
  GpuBatchPreparer& operator=(const GpuBatchPreparer&) = delete;

  // Validates, stages the descriptor and enqueues its copy and the update kernel.
  StepTotals update(const Step& step);
  // Enqueues the pack kernel for the step last passed to update().
  void pack();
  StepTotals prepare(const Step& step) {
    StepTotals t = update(step);
    pack();
    return t;
  }

  // Captures (copy of a full-size descriptor, update, pack) into a graph once; afterwards
  // prepare_graph(step) stages the step and replays the graph.
  void capture_graph();
  StepTotals prepare_graph(const Step& step);

  // Device view of the last step's metadata (fixed-layout device buffer).
  AttentionMetadata metadata() const;
  // Waits for the stream; throws OutOfMemory if a step ran out of blocks (see above).
  void synchronize();
  // synchronize(), then a host copy of the last step's metadata.
  MetadataSnapshot download();
  // synchronize(), then the device's free-block count.
  size_t free_blocks();
  // synchronize(), then the row of `seq` (its ceil(len / bs) block ids).
  std::vector<int32_t> blocks(int32_t seq);
  int32_t length(int32_t seq) const;  // host shadow; -1 when not live
  cudaStream_t stream() const;
  const BatchConfig& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvpager::batch
