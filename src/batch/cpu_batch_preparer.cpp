#include "kvpager/batch/cpu_batch_preparer.hpp"

#include "kvpager/common/error.hpp"

namespace kvpager::batch {
namespace {
MetadataLayout max_layout(const BatchConfig& c) {
  return MetadataLayout::make(c.max_batch, c.max_tokens_per_step,
                              c.max_batch * c.max_blocks_per_seq, c.max_blocks_per_seq);
}
bool require_device() {
  if (!cuda_device_present())
    throw Error("the CPU batch preparer uploads to a GPU, and no CUDA device is present");
  return true;
}
}  // namespace

CpuBatchPreparer::CpuBatchPreparer(BlockTableManager& manager)
    : manager_((require_device(), manager)),
      staging_{PinnedBuffer(max_layout(manager.config()).total_bytes()),
               PinnedBuffer(max_layout(manager.config()).total_bytes())},
      device_(max_layout(manager.config()).total_bytes()) {}

AttentionMetadata CpuBatchPreparer::pack(const Step& step) {
  const int slot = next_;
  if (pending_[slot]) copied_[slot].synchronize();  // the copy from two steps ago
  int32_t* host = staging_[slot].data<int32_t>();
  const size_t capacity = staging_[slot].bytes() / sizeof(int32_t);
  host_view_ = manager_.pack(step, std::span<int32_t>(host, capacity));
  const MetadataLayout l = manager_.layout();
  check_cuda(
      cudaMemcpyAsync(device_.data(), host, l.total_bytes(), cudaMemcpyHostToDevice, stream_.get()),
      "cudaMemcpyAsync");
  copied_[slot].record(stream_.get());
  pending_[slot] = true;
  next_ = 1 - slot;
  AttentionMetadata d = AttentionMetadata::over(device_.data<int32_t>(), l, true);
  d.batch = host_view_.batch;
  d.num_tokens = host_view_.num_tokens;
  d.num_kv_indices = host_view_.num_kv_indices;
  d.max_seqlen_q = host_view_.max_seqlen_q;
  d.max_seqlen_k = host_view_.max_seqlen_k;
  d.block_size = host_view_.block_size;
  device_view_ = d;
  return d;
}

}  // namespace kvpager::batch
