#pragma once
// Test helper: a small reference paged-attention kernel (fp32, causal) and the KV-cache write
// that precedes it, driven only by the metadata arrays. Plain C++17 so nvcc compiles it.
// Caches are [num_blocks * block_size, heads, dim]; q / new_k / new_v / out are
// [num_tokens, heads, dim]; dim <= 64.
#include <cuda_runtime_api.h>

#include <cstdint>

namespace kvpager::batch::testing {

struct PagedKv {
  int32_t batch = 0;
  int32_t num_tokens = 0;
  int32_t block_size = 0;
  int32_t width = 0;                         // block_table columns
  const int32_t* block_table = nullptr;      // FlashAttention form
  const int32_t* seq_lens = nullptr;         // seqused_k
  const int32_t* cu_seqlens_q = nullptr;     // = qo_indptr
  const int32_t* paged_kv_indptr = nullptr;  // FlashInfer form
  const int32_t* paged_kv_indices = nullptr;
  const int32_t* paged_kv_last_page_len = nullptr;
  const int32_t* slot_mapping = nullptr;
};

// k_cache[slot_mapping[t]] = new_k[t] (same for v); slots < 0 are skipped.
cudaError_t store_kv(const PagedKv& m, const float* new_k, const float* new_v, float* k_cache,
                     float* v_cache, int heads, int dim, cudaStream_t stream);

// out[t] = softmax(q[t] . K[0..pos] / sqrt(dim)) V[0..pos] for the t-th new token at position
// pos of its sequence, K and V gathered through block_table + seq_lens (flashinfer false) or
// paged_kv_indptr / paged_kv_indices / paged_kv_last_page_len (flashinfer true).
cudaError_t paged_attention(const PagedKv& m, bool flashinfer, const float* q, const float* k_cache,
                            const float* v_cache, float* out, int heads, int dim,
                            cudaStream_t stream);

}  // namespace kvpager::batch::testing
