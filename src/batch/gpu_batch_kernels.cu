// Kernels of the GPU block-table path. `update` runs as one thread block so that the free
// stack, reference counts and prefix sums follow exactly the order the CPU manager uses;
// `pack` runs one thread block per batch row for the O(tokens + blocks) writes.
#include <cuda_runtime.h>

#include "gpu_batch_kernels.hpp"

namespace kvpager::batch::gpu {
namespace {

constexpr int kPackThreads = 128;
constexpr unsigned kFullMask = 0xffffffffu;

// Exclusive prefix sums of four values at once over the thread block (threadIdx order);
// *total gets the four sums. Every thread of the block must call it (it synchronises).
template <int kThreads>
__device__ int4 block_exclusive_scan(int4 v, int4* total, int4* s_warp) {
  constexpr int kWarps = kThreads / 32;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  int4 x = v;
  for (int o = 1; o < 32; o <<= 1) {
    const int y0 = __shfl_up_sync(kFullMask, x.x, o);
    const int y1 = __shfl_up_sync(kFullMask, x.y, o);
    const int y2 = __shfl_up_sync(kFullMask, x.z, o);
    const int y3 = __shfl_up_sync(kFullMask, x.w, o);
    if (lane >= o) {
      x.x += y0;
      x.y += y1;
      x.z += y2;
      x.w += y3;
    }
  }
  if (lane == 31) s_warp[warp] = x;  // inclusive sums of this warp
  __syncthreads();
  if (warp == 0) {
    int4 w = lane < kWarps ? s_warp[lane] : make_int4(0, 0, 0, 0);
    for (int o = 1; o < 32; o <<= 1) {
      const int y0 = __shfl_up_sync(kFullMask, w.x, o);
      const int y1 = __shfl_up_sync(kFullMask, w.y, o);
      const int y2 = __shfl_up_sync(kFullMask, w.z, o);
      const int y3 = __shfl_up_sync(kFullMask, w.w, o);
      if (lane >= o) {
        w.x += y0;
        w.y += y1;
        w.z += y2;
        w.w += y3;
      }
    }
    if (lane < kWarps) s_warp[lane] = w;  // inclusive sums over warps 0..lane
  }
  __syncthreads();
  const int4 before = warp > 0 ? s_warp[warp - 1] : make_int4(0, 0, 0, 0);
  *total = s_warp[kWarps - 1];
  __syncthreads();  // s_warp is reused by the next call
  return make_int4(before.x + x.x - v.x, before.y + x.y - v.y, before.z + x.z - v.z,
                   before.w + x.w - v.w);
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

// One thread block. Order (the CPU manager's): per-row sizes and prefix sums; refuse the whole
// step if the free stack is short; forks; pop the new blocks in batch order; finished
// sequences drop their references and push unreferenced blocks in row order.
template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    update_kernel(Tables t, Outputs o, const int32_t* __restrict__ desc) {
  __shared__ int4 s_warp[32];
  __shared__ int s_scan[32];
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
  if (tid == 0) {
    s_max_q = 0;
    s_max_k = 0;
  }
  __syncthreads();

  // 1. Per row: new blocks, query length, key length, blocks; running prefix sums of each.
  // Only metadata outputs are written here (a refused step overwrites them below).
  int4 carry = make_int4(0, 0, 0, 0);  // need, q, k, kv
  for (int base = 0; base < n_batch; base += kThreads) {
    const int i = base + tid;
    int4 v = make_int4(0, 0, 0, 0);
    if (i < n_batch) {
      const int p = batch[3 * i + 1];
      const int q = batch[3 * i + 2];
      const int kv = blocks_for(p + q, bs, sh);
      v = make_int4(kv - blocks_for(p, bs, sh), q, p + q, kv);
    }
    int4 total;
    const int4 off = block_exclusive_scan<kThreads>(v, &total, s_warp);
    if (i < n_batch) {
      t.alloc_off[i] = carry.x + off.x;
      o.seq_lens[i] = v.z;
      o.cu_seqlens_q[i + 1] = carry.y + off.y + v.y;
      o.cu_seqlens_k[i + 1] = carry.z + off.z + v.z;
      o.paged_kv_indptr[i + 1] = carry.w + off.w + v.w;
      o.paged_kv_last_page_len[i] = v.z - (v.w - 1) * bs;
      atomicMax(&s_max_q, v.y);
      atomicMax(&s_max_k, v.z);
    }
    carry = make_int4(carry.x + total.x, carry.y + total.y, carry.z + total.z, carry.w + total.w);
  }
  const int need_total = carry.x;
  const int top = t.state[kFreeTop];
  const bool fail = t.state[kError] != 0 || need_total > top;  // same value in every thread
  __syncthreads();  // every thread has read state before thread 0 may write it
  if (fail) {       // no table changes; the metadata of an empty step
    if (tid == 0) {
      t.state[kError] = 1;
      t.state[kStepOk] = 0;
      o.header[0] = n_batch;
      o.header[1] = n_tokens;
      for (int k = 2; k < 8; ++k) o.header[k] = 0;
      o.header[5] = bs;
      o.header[6] = t.width;
    }
    for (int i = tid; i < n_batch; i += kThreads) {
      o.seq_lens[i] = 0;
      o.paged_kv_last_page_len[i] = 0;
    }
    for (int i = tid; i <= n_batch; i += kThreads)
      o.cu_seqlens_q[i] = o.cu_seqlens_k[i] = o.paged_kv_indptr[i] = 0;
    for (int i = tid; i < n_tokens; i += kThreads) o.slot_mapping[i] = -1;
    return;
  }

  // 2. Forks: the child shares the parent's first prefix_len / bs blocks.
  for (int f = 0; f < n_forks; ++f) {
    const int parent = forks[3 * f];
    const int child = forks[3 * f + 1];
    const int shared = forks[3 * f + 2] >> sh;
    const int32_t* from = t.rows + static_cast<size_t>(parent) * t.width;
    int32_t* to = t.rows + static_cast<size_t>(child) * t.width;
    for (int j = tid; j < shared; j += kThreads) {
      const int b = from[j];
      to[j] = b;
      atomicAdd(&t.refcount[b], 1);
    }
    if (tid == 0) t.lens[child] = shared << sh;
  }
  __syncthreads();  // a fork child in the batch gets its new length below

  // 3. Pop need_total ids (row i's start at alloc_off[i]); the rows' new lengths.
  for (int m = tid; m < need_total; m += kThreads) {
    const int b = t.free_stack[top - 1 - m];
    t.alloc_ids[m] = b;
    t.refcount[b] = 1;
  }
  for (int i = tid; i < n_batch; i += kThreads)
    t.lens[batch[3 * i]] = batch[3 * i + 1] + batch[3 * i + 2];
  __syncthreads();  // every popped id is read before a free overwrites its stack slot

  // 4. Finished sequences drop their references, in order; unreferenced blocks are pushed in
  // row order.
  int new_top = top - need_total;
  for (int f = 0; f < n_finished; ++f) {
    const int seq = finished[f];
    const int count = blocks_for(t.lens[seq], bs, sh);
    const int32_t* r = t.rows + static_cast<size_t>(seq) * t.width;
    for (int base = 0; base < count; base += kThreads) {
      const int j = base + tid;
      int freed = 0, b = 0;
      if (j < count) {
        b = r[j];
        freed = atomicSub(&t.refcount[b], 1) == 1 ? 1 : 0;
      }
      // Compaction of the freed flags: ballot within the warp, warp totals in s_scan.
      const unsigned ballot = __ballot_sync(kFullMask, freed);
      const int lane = tid & 31;
      const int warp = tid >> 5;
      if (lane == 0) s_scan[warp] = __popc(ballot);
      __syncthreads();
      int warp_before = 0, chunk = 0;
      for (int w = 0; w < kThreads / 32; ++w) {
        warp_before += w < warp ? s_scan[w] : 0;
        chunk += s_scan[w];
      }
      if (freed) t.free_stack[new_top + warp_before + __popc(ballot & ((1u << lane) - 1u))] = b;
      new_top += chunk;
      __syncthreads();  // s_scan is rewritten next round
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
    o.header[1] = carry.y;
    o.header[2] = carry.w;
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

cudaError_t launch_update(const Tables& t, const Outputs& o, const int32_t* desc, int32_t max_batch,
                          cudaStream_t stream) {
  if (max_batch <= 256) {
    update_kernel<256><<<1, 256, 0, stream>>>(t, o, desc);
  } else {
    update_kernel<1024><<<1, 1024, 0, stream>>>(t, o, desc);
  }
  return cudaGetLastError();
}

cudaError_t launch_pack(const Tables& t, const Outputs& o, const int32_t* desc, int32_t max_batch,
                        cudaStream_t stream) {
  pack_kernel<<<max_batch, kPackThreads, 0, stream>>>(t, o, desc);
  return cudaGetLastError();
}

}  // namespace kvpager::batch::gpu
