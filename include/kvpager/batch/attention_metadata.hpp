#pragma once
// Attention metadata of one step as int32 arrays in one buffer, in the forms the kernels take:
// FlashAttention varlen + paged KV (block_table, slot_mapping, seq_lens = seqused_k,
// cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k) and FlashInfer (qo_indptr =
// cu_seqlens_q, paged_kv_indptr, paged_kv_indices, paged_kv_last_page_len).
//
// For batch row i with sequence s, prior length p and n new tokens (len = p + n):
//   seq_lens[i] = len; cu_seqlens_q[i+1] - cu_seqlens_q[i] = n; cu_seqlens_k likewise with len;
//   block_table[i][j] = s's j-th block for j < ceil(len / bs), 0 for the rest of the row;
//   slot_mapping[cu_seqlens_q[i] + t] = block_table[i][pos / bs] * bs + pos % bs, pos = p + t;
//   paged_kv_indices[paged_kv_indptr[i] + j] = block_table[i][j], j < ceil(len / bs);
//   paged_kv_last_page_len[i] = len - (ceil(len / bs) - 1) * bs.
// Both implementations write exactly these values; a MetadataSnapshot compares them.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kvpager::batch {

// Where each array sits in the int32 buffer (offsets in int32 elements). Header fields:
// [0] batch, [1] num_tokens, [2] num_kv_indices, [3] max_seqlen_q, [4] max_seqlen_k,
// [5] block_size, [6] block_table width, [7] 0.
struct MetadataLayout {
  static constexpr size_t kHeaderInts = 8;
  int32_t batch = 0;       // rows
  int32_t tokens = 0;      // slot_mapping length
  int32_t kv_indices = 0;  // paged_kv_indices length
  int32_t width = 0;       // block_table columns
  size_t header = 0, seq_lens = 0, cu_seqlens_q = 0, cu_seqlens_k = 0, paged_kv_indptr = 0,
         paged_kv_last_page_len = 0, slot_mapping = 0, block_table = 0, paged_kv_indices = 0,
         total_ints = 0;

  static MetadataLayout make(int32_t batch, int32_t tokens, int32_t kv_indices, int32_t width);
  size_t total_bytes() const { return total_ints * sizeof(int32_t); }
};

// A view of one step's metadata: pointers into host or device memory owned by the component
// that produced it, valid until its next step.
struct AttentionMetadata {
  bool on_device = false;
  int32_t batch = 0, num_tokens = 0, num_kv_indices = 0, max_seqlen_q = 0, max_seqlen_k = 0,
          block_size = 0, block_table_width = 0;
  const int32_t* header = nullptr;
  const int32_t* seq_lens = nullptr;
  const int32_t* cu_seqlens_q = nullptr;
  const int32_t* cu_seqlens_k = nullptr;
  const int32_t* paged_kv_indptr = nullptr;
  const int32_t* paged_kv_last_page_len = nullptr;
  const int32_t* slot_mapping = nullptr;
  const int32_t* block_table = nullptr;  // [batch, block_table_width], row-major
  const int32_t* paged_kv_indices = nullptr;

  const int32_t* seqused_k() const { return seq_lens; }
  const int32_t* qo_indptr() const { return cu_seqlens_q; }

  // Points every array into `base` (host or device) laid out as `layout`.
  static AttentionMetadata over(const int32_t* base, const MetadataLayout& layout, bool on_device);
};

// An owning host copy of the meaningful part of every array, for comparison and tests.
struct MetadataSnapshot {
  std::vector<int32_t> header, seq_lens, cu_seqlens_q, cu_seqlens_k, paged_kv_indptr,
      paged_kv_last_page_len, slot_mapping, block_table, paged_kv_indices;
  bool operator==(const MetadataSnapshot&) const = default;
  // Empty when equal, else the first differing array and index.
  std::string first_difference(const MetadataSnapshot& other) const;
};

// Copies a host-memory view (on_device false; InvalidArgument otherwise).
MetadataSnapshot snapshot(const AttentionMetadata& host_view);

}  // namespace kvpager::batch
