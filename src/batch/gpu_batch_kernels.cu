// Kernels of the GPU block-table path. `update` runs as one thread block so that the free
// stack, reference counts and prefix sums follow exactly the order the CPU manager uses;
// `pack` runs one thread block per batch row for the O(tokens + blocks) writes.
#include <cuda_runtime.h>

#include "gpu_batch_kernels.hpp"

namespace kvpager::batch::gpu {
namespace {

constexpr int kUpdateThreads = 1024;
constexpr int kPackThreads = 128;
constexpr int kWarps = kUpdateThreads / 32;
constexpr unsigned kFullMask = 0xffffffffu;

// Exclusive prefix sum of v over the thread block (in threadIdx order); *total gets the sum.
// Every thread of the block must call it (it synchronises).
__device__ int block_exclusive_scan(int v, int* total, int* s_warp) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  int x = v;
  for (int o = 1; o < 32; o <<= 1) {
    const int y = __shfl_up_sync(kFullMask, x, o);
    if (lane >= o) x += y;
  }
  if (lane == 31) s_warp[warp] = x;  // inclusive sum of this warp
  __syncthreads();
  if (warp == 0) {
    int w = lane < kWarps ? s_warp[lane] : 0;
    for (int o = 1; o < 32; o <<= 1) {
      const int y = __shfl_up_sync(kFullMask, w, o);
      if (lane >= o) w += y;
    }
    s_warp[lane] = w;  // inclusive sum over warps 0..lane
  }
  __syncthreads();
  const int before = warp > 0 ? s_warp[warp - 1] : 0;
  *total = s_warp[kWarps - 1];
  __syncthreads();  // s_warp is reused by the next call
  return before + x - v;
}

__device__ __forceinline__ int blocks_for(int tokens, int block_size, int shift) {
  return (tokens + block_size - 1) >> shift;
}

__global__ void init_kernel(Tables t) {
  const int stride = gridDim.x * blockDim.x;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < t.num_blocks; i += stride) {
    t.free_stack[i] = t.num_blocks - 1 - i;  // top of the stack is id 0, as on the CPU
    t.refcount[i] = 0;
  }
  for (int s = blockIdx.x * blockDim.x + threadIdx.x; s < t.max_seqs; s += stride) t.lens[s] = -1;
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    t.state[kFreeTop] = t.num_blocks;
    t.state[kError] = 0;
    t.state[kStepOk] = 0;
  }
}

__global__ void __launch_bounds__(kUpdateThreads)
    update_kernel(Tables t, Outputs o, const int32_t* __restrict__ desc) {
  __shared__ int s_warp[32];
  __shared__ int s_fail;
  __shared__ int s_max_q;
  __shared__ int s_max_k;
  const int tid = threadIdx.x;
  const int n_batch = desc[0];
  const int n_finished = desc[1];
  const int n_forks = desc[2];
  const int n_tokens = desc[3];
  const int32_t* batch = desc + kDescHeaderInts;
  const int32_t* finished = batch + 3 * n_batch;
  const int32_t* forks = finished + n_finished;
  const int bs = t.block_size;
  const int sh = t.shift;

  // 1. Blocks the step needs; the step is refused whole if the stack holds fewer.
  int need_total = 0;
  for (int base = 0; base < n_batch; base += kUpdateThreads) {
    const int i = base + tid;
    int need = 0;
    if (i < n_batch) {
      const int p = batch[3 * i + 1];
      need = blocks_for(p + batch[3 * i + 2], bs, sh) - blocks_for(p, bs, sh);
    }
    int chunk = 0;
    block_exclusive_scan(need, &chunk, s_warp);
    need_total += chunk;
  }
  const int top = t.state[kFreeTop];
  if (tid == 0) {
    s_fail = (t.state[kError] != 0 || need_total > top) ? 1 : 0;
    s_max_q = 0;
    s_max_k = 0;
  }
  __syncthreads();
  if (s_fail) {  // no table changes; metadata of an empty step
    if (tid == 0) {
      t.state[kError] = 1;
      t.state[kStepOk] = 0;
      o.header[0] = n_batch;
      o.header[1] = n_tokens;
      for (int k = 2; k < 8; ++k) o.header[k] = 0;
      o.header[5] = bs;
      o.header[6] = t.width;
    }
    for (int i = tid; i < n_batch; i += kUpdateThreads) {
      o.seq_lens[i] = 0;
      o.paged_kv_last_page_len[i] = 0;
    }
    for (int i = tid; i <= n_batch; i += kUpdateThreads)
      o.cu_seqlens_q[i] = o.cu_seqlens_k[i] = o.paged_kv_indptr[i] = 0;
    for (int i = tid; i < n_tokens; i += kUpdateThreads) o.slot_mapping[i] = -1;
    return;
  }

  // 2. Forks: the child shares the parent's first prefix_len / bs blocks.
  for (int f = 0; f < n_forks; ++f) {
    const int parent = forks[3 * f];
    const int child = forks[3 * f + 1];
    const int shared = forks[3 * f + 2] >> sh;
    const int32_t* from = t.rows + static_cast<size_t>(parent) * t.width;
    int32_t* to = t.rows + static_cast<size_t>(child) * t.width;
    for (int j = tid; j < shared; j += kUpdateThreads) {
      const int b = from[j];
      to[j] = b;
      atomicAdd(&t.refcount[b], 1);
    }
    if (tid == 0) t.lens[child] = shared << sh;
  }
  __syncthreads();  // a fork child in the batch gets its new length below

  // 3. Pop need_total ids (batch order), and the per-row metadata with running prefix sums.
  for (int m = tid; m < need_total; m += kUpdateThreads) {
    const int b = t.free_stack[top - 1 - m];
    t.alloc_ids[m] = b;
    t.refcount[b] = 1;
  }
  int carry_need = 0, carry_q = 0, carry_k = 0, carry_kv = 0;
  for (int base = 0; base < n_batch; base += kUpdateThreads) {
    const int i = base + tid;
    int seq = 0, q = 0, len = 0, kv = 0, need = 0;
    if (i < n_batch) {
      seq = batch[3 * i];
      const int p = batch[3 * i + 1];
      q = batch[3 * i + 2];
      len = p + q;
      kv = blocks_for(len, bs, sh);
      need = kv - blocks_for(p, bs, sh);
    }
    int total_need = 0, total_q = 0, total_k = 0, total_kv = 0;
    const int off_need = block_exclusive_scan(need, &total_need, s_warp);
    const int off_q = block_exclusive_scan(q, &total_q, s_warp);
    const int off_k = block_exclusive_scan(len, &total_k, s_warp);
    const int off_kv = block_exclusive_scan(kv, &total_kv, s_warp);
    if (i < n_batch) {
      t.alloc_off[i] = carry_need + off_need;
      t.lens[seq] = len;
      o.seq_lens[i] = len;
      o.cu_seqlens_q[i + 1] = carry_q + off_q + q;
      o.cu_seqlens_k[i + 1] = carry_k + off_k + len;
      o.paged_kv_indptr[i + 1] = carry_kv + off_kv + kv;
      o.paged_kv_last_page_len[i] = len - (kv - 1) * bs;
      atomicMax(&s_max_q, q);
      atomicMax(&s_max_k, len);
    }
    carry_need += total_need;
    carry_q += total_q;
    carry_k += total_k;
    carry_kv += total_kv;
  }
  __syncthreads();  // every popped id is read before a free overwrites its stack slot

  // 4. Finished sequences drop their references, in order; unreferenced blocks are pushed in
  // row order (the CPU manager's order).
  int new_top = top - need_total;
  for (int f = 0; f < n_finished; ++f) {
    const int seq = finished[f];
    const int count = blocks_for(t.lens[seq], bs, sh);
    const int32_t* r = t.rows + static_cast<size_t>(seq) * t.width;
    for (int base = 0; base < count; base += kUpdateThreads) {
      const int j = base + tid;
      int freed = 0, b = 0;
      if (j < count) {
        b = r[j];
        freed = atomicSub(&t.refcount[b], 1) == 1 ? 1 : 0;
      }
      int chunk = 0;
      const int at = block_exclusive_scan(freed, &chunk, s_warp);
      if (freed) t.free_stack[new_top + at] = b;
      new_top += chunk;
    }
    __syncthreads();  // every thread has read lens[seq]
    if (tid == 0) t.lens[seq] = -1;
  }

  if (tid == 0) {
    t.state[kFreeTop] = new_top;
    t.state[kStepOk] = 1;
    o.cu_seqlens_q[0] = 0;
    o.cu_seqlens_k[0] = 0;
    o.paged_kv_indptr[0] = 0;
    o.header[0] = n_batch;
    o.header[1] = carry_q;
    o.header[2] = carry_kv;
    o.header[3] = s_max_q;
    o.header[4] = s_max_k;
    o.header[5] = bs;
    o.header[6] = t.width;
    o.header[7] = 0;
  }
}

__global__ void __launch_bounds__(kPackThreads)
    pack_kernel(Tables t, Outputs o, const int32_t* __restrict__ desc) {
  if (t.state[kStepOk] == 0) return;  // the update refused this step
  const int i = blockIdx.x;
  if (i >= desc[0]) return;
  const int32_t* e = desc + kDescHeaderInts + 3 * i;
  const int seq = e[0];
  const int p = e[1];
  const int n = e[2];
  const int bs = t.block_size;
  const int sh = t.shift;
  const int old_blocks = blocks_for(p, bs, sh);
  const int blocks = blocks_for(p + n, bs, sh);
  int32_t* r = t.rows + static_cast<size_t>(seq) * t.width;
  const int32_t* ids = t.alloc_ids + t.alloc_off[i];  // this row's new block ids
  for (int j = old_blocks + threadIdx.x; j < blocks; j += kPackThreads) r[j] = ids[j - old_blocks];
  __syncthreads();
  int32_t* table = o.block_table + static_cast<size_t>(i) * t.width;
  int32_t* indices = o.paged_kv_indices + o.paged_kv_indptr[i];
  for (int j = threadIdx.x; j < t.width; j += kPackThreads) {
    const int b = j < blocks ? r[j] : 0;
    table[j] = b;
    if (j < blocks) indices[j] = b;
  }
  int32_t* slots = o.slot_mapping + o.cu_seqlens_q[i];
  for (int k = threadIdx.x; k < n; k += kPackThreads) {
    const int pos = p + k;
    slots[k] = (r[pos >> sh] << sh) + (pos & (bs - 1));
  }
}

}  // namespace

cudaError_t launch_init(const Tables& t, cudaStream_t stream) {
  init_kernel<<<64, 256, 0, stream>>>(t);
  return cudaGetLastError();
}

cudaError_t launch_update(const Tables& t, const Outputs& o, const int32_t* desc,
                          cudaStream_t stream) {
  update_kernel<<<1, kUpdateThreads, 0, stream>>>(t, o, desc);
  return cudaGetLastError();
}

cudaError_t launch_pack(const Tables& t, const Outputs& o, const int32_t* desc, int32_t max_batch,
                        cudaStream_t stream) {
  pack_kernel<<<max_batch, kPackThreads, 0, stream>>>(t, o, desc);
  return cudaGetLastError();
}

}  // namespace kvpager::batch::gpu
