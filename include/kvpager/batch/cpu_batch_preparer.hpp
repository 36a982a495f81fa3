#pragma once
// The CPU path end to end: a BlockTableManager updates the tables on the host, then pack()
// writes the step's metadata into pinned host memory and enqueues one async H2D copy into a
// device buffer. After pack() returns, the metadata is ready on the GPU for any work enqueued
// later on stream() (or on a stream that waits for it).
//
// Promises: no allocation or synchronisation per step. Two pinned staging buffers alternate;
// pack() waits (event) only if the copy from two steps ago has not finished. Device memory and
// pinned memory are sized from BatchConfig at construction. Needs a CUDA device (Error
// otherwise); the manager alone works without one. Not thread-safe.
#include <memory>

#include "kvpager/batch/attention_metadata.hpp"
#include "kvpager/batch/block_table_manager.hpp"
#include "kvpager/batch/cuda_resources.hpp"

namespace kvpager::batch {

class CpuBatchPreparer {
 public:
  // `manager` is not owned and must outlive this object.
  explicit CpuBatchPreparer(BlockTableManager& manager);

  StepTotals update(const Step& step) { return manager_.update(step); }
  // Packs the step last applied and enqueues its H2D copy; returns the device view.
  AttentionMetadata pack(const Step& step);
  // The host view of the last packed step (pinned memory).
  AttentionMetadata host_metadata() const { return host_view_; }
  AttentionMetadata metadata() const { return device_view_; }
  void synchronize() { stream_.synchronize(); }
  cudaStream_t stream() const { return stream_.get(); }
  BlockTableManager& manager() { return manager_; }

 private:
  BlockTableManager& manager_;
  CudaStream stream_;
  PinnedBuffer staging_[2];
  CudaEvent copied_[2];
  bool pending_[2] = {false, false};
  int next_ = 0;
  DeviceBuffer device_;
  AttentionMetadata host_view_, device_view_;
};

}  // namespace kvpager::batch
