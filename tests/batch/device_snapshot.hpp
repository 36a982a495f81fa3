#pragma once
// Test helper: a host copy of a device metadata view (synchronous copies).
#include <cuda_runtime_api.h>

#include <vector>

#include "kvpager/batch/attention_metadata.hpp"
#include "kvpager/batch/cuda_resources.hpp"

namespace kvpager::batch::testing {

inline MetadataSnapshot download_view(const AttentionMetadata& m) {
  auto copy = [](const int32_t* p, int64_t n) {
    std::vector<int32_t> v(static_cast<size_t>(n > 0 ? n : 0));
    if (!v.empty())
      check_cuda(cudaMemcpy(v.data(), p, v.size() * sizeof(int32_t), cudaMemcpyDeviceToHost),
                 "cudaMemcpy");
    return v;
  };
  MetadataSnapshot s;
  const int64_t b = m.batch;
  s.header = copy(m.header, MetadataLayout::kHeaderInts);
  s.seq_lens = copy(m.seq_lens, b);
  s.cu_seqlens_q = copy(m.cu_seqlens_q, b + 1);
  s.cu_seqlens_k = copy(m.cu_seqlens_k, b + 1);
  s.paged_kv_indptr = copy(m.paged_kv_indptr, b + 1);
  s.paged_kv_last_page_len = copy(m.paged_kv_last_page_len, b);
  s.slot_mapping = copy(m.slot_mapping, m.num_tokens);
  s.block_table = copy(m.block_table, b * m.block_table_width);
  s.paged_kv_indices = copy(m.paged_kv_indices, m.num_kv_indices);
  return s;
}

}  // namespace kvpager::batch::testing
