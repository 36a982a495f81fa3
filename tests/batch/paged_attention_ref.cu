#include <cuda_runtime.h>

#include <cmath>

#include "paged_attention_ref.hpp"

namespace kvpager::batch::testing {
namespace {

constexpr int kMaxDim = 64;

__global__ void store_kernel(PagedKv m, const float* new_k, const float* new_v, float* k_cache,
                             float* v_cache, int row) {
  const long long total = static_cast<long long>(m.num_tokens) * row;
  for (long long x = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; x < total;
       x += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long t = x / row;
    const int e = static_cast<int>(x % row);
    const int slot = m.slot_mapping[t];
    if (slot < 0) continue;
    k_cache[static_cast<long long>(slot) * row + e] = new_k[x];
    v_cache[static_cast<long long>(slot) * row + e] = new_v[x];
  }
}

__global__ void attention_kernel(PagedKv m, bool flashinfer, const float* q, const float* k_cache,
                                 const float* v_cache, float* out, int heads, int dim) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x;
  if (x >= m.num_tokens * heads) return;
  const int t = x / heads;
  const int h = x % heads;
  int lo = 0, hi = m.batch - 1;  // the row whose query range holds t
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (m.cu_seqlens_q[mid] <= t)
      lo = mid;
    else
      hi = mid - 1;
  }
  const int i = lo;
  const int q_len = m.cu_seqlens_q[i + 1] - m.cu_seqlens_q[i];
  const int bs = m.block_size;
  int kv_len = m.seq_lens[i];
  if (flashinfer)
    kv_len =
        (m.paged_kv_indptr[i + 1] - m.paged_kv_indptr[i] - 1) * bs + m.paged_kv_last_page_len[i];
  const int pos = kv_len - q_len + (t - m.cu_seqlens_q[i]);
  const int row = heads * dim;
  const float* qv = q + static_cast<long long>(t) * row + h * dim;
  const float scale = 1.0f / sqrtf(static_cast<float>(dim));
  float acc[kMaxDim];
  for (int d = 0; d < dim; ++d) acc[d] = 0.f;
  float mx = -INFINITY, denom = 0.f;
  for (int p = 0; p <= pos; ++p) {
    const int page = flashinfer ? m.paged_kv_indices[m.paged_kv_indptr[i] + p / bs]
                                : m.block_table[static_cast<long long>(i) * m.width + p / bs];
    const long long slot = static_cast<long long>(page) * bs + p % bs;
    const float* k = k_cache + slot * row + h * dim;
    const float* v = v_cache + slot * row + h * dim;
    float s = 0.f;
    for (int d = 0; d < dim; ++d) s += qv[d] * k[d];
    s *= scale;
    const float mx_new = fmaxf(mx, s);
    const float corr = expf(mx - mx_new);
    const float w = expf(s - mx_new);
    denom = denom * corr + w;
    for (int d = 0; d < dim; ++d) acc[d] = acc[d] * corr + w * v[d];
    mx = mx_new;
  }
  float* o = out + static_cast<long long>(t) * row + h * dim;
  for (int d = 0; d < dim; ++d) o[d] = acc[d] / denom;
}

}  // namespace

cudaError_t store_kv(const PagedKv& m, const float* new_k, const float* new_v, float* k_cache,
                     float* v_cache, int heads, int dim, cudaStream_t stream) {
  if (m.num_tokens == 0) return cudaSuccess;
  store_kernel<<<128, 256, 0, stream>>>(m, new_k, new_v, k_cache, v_cache, heads * dim);
  return cudaGetLastError();
}

cudaError_t paged_attention(const PagedKv& m, bool flashinfer, const float* q, const float* k_cache,
                            const float* v_cache, float* out, int heads, int dim,
                            cudaStream_t stream) {
  if (dim > kMaxDim) return cudaErrorInvalidValue;
  const int n = m.num_tokens * heads;
  if (n == 0) return cudaSuccess;
  attention_kernel<<<(n + 127) / 128, 128, 0, stream>>>(m, flashinfer, q, k_cache, v_cache, out,
                                                        heads, dim);
  return cudaGetLastError();
}

}  // namespace kvpager::batch::testing
