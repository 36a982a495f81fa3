#pragma once
// The GPU path: the free-block stack, reference counts and per-sequence block rows live in
// device memory; each step the host validates the Step and turns it into a small int32
// descriptor (header + the batch, finished and fork arrays as they are). Three ways to run it:
//   prepare(step): one kernel launch. The descriptor travels as the kernel's parameters when
//     it fits (8000 ints: a decode step of up to 2664 rows), else it is written to a
//     pinned ring slot and copied with one cudaMemcpyAsync before the launch.
//   update(step) + pack(): the same work split in two kernels after one descriptor copy
//     (`update`: one thread block for forks, allocation, frees and the per-row metadata;
//     `pack`: one thread block per row). Slower; kept so the two phases can be timed apart.
//   capture_graph() once, then prepare_graph(step): a graph of (copy of a full-size
//     descriptor from a fixed pinned slot, the fused kernel) replayed per step.
// No host round trip, no allocation and no synchronisation inside a step (prepare_graph and
// a copied descriptor wait, by event, only for a staging slot the GPU has not consumed yet).
// Given the same config and steps, all three give metadata and block ids equal to
// BlockTableManager's with a FreeListBlockSource.
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

// How the last step's descriptor reached the GPU.
enum class DescriptorPath { kKernelParameters, kCopied };

class GpuBatchPreparer {
 public:
  explicit GpuBatchPreparer(const BatchConfig& config);  // on the current CUDA device
  ~GpuBatchPreparer();
  GpuBatchPreparer(const GpuBatchPreparer&) = delete;
  GpuBatchPreparer& operator=(const GpuBatchPreparer&) = delete;

  // Validates the step and enqueues the fused kernel (see above); returns the step's totals.
  StepTotals prepare(const Step& step);
  // Split path: validates, stages the descriptor and enqueues its copy and the update kernel;
  // pack() then enqueues the pack kernel for that step. update + pack == prepare.
  StepTotals update(const Step& step);
  void pack();

  // Captures (copy of a full-size descriptor, the fused kernel) into a graph once; afterwards
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
  DescriptorPath last_descriptor_path() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvpager::batch
