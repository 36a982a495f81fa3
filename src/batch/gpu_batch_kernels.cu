// Kernels of the GPU block-table path.
// Split (update() + pack()): `update` runs as one thread block so that the free stack,
// reference counts and prefix sums follow exactly the order the CPU manager uses; `pack` runs
// one thread block per batch row for the O(tokens + blocks) writes.
// Fused (prepare(), graphs): `step` does both in one launch; see step_body.
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
    t.state[kArrived] = 0;
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

// ---- Fused step -------------------------------------------------------------------------
//
// Grid: G = min(rows, kMaxStepCtas) thread blocks of kStepThreads; block b owns the batch rows
// i with i % G == b. Every block:
//   1. stages the header and batch triples in shared memory (16-byte loads), reads the free
//      stack top and the error word (nobody writes them before step 3);
//   2. scans the batch rows' (new blocks, q, k, kv blocks) in chunks of kStepThreads and, for
//      the rows it owns, writes the per-row metadata and the row: old entries from the
//      sequence's row (a fork child's from its parent's), new entries read straight from the
//      free stack (row i's j-th new block is free_stack[top - 1 - alloc_off(i) - j]), which it
//      also appends to the sequence's row with reference count 1;
//   3. arrives on a counter; the last block to arrive (the classic threadfence-reduction
//      pattern: no block waits for another, so no co-residency is assumed) applies what must
//      follow the CPU manager's order and what would race with step 2's reads of the stack:
//      forks (rows copied, references added), the new lengths, then the finished sequences
//      (references dropped, unreferenced blocks pushed in row order onto the free stack, which
//      overwrites slots step 2 read), the new top, and resets the counter.
// Disjointness that makes step 2 race-free: sequences in the batch are distinct; a fork child's
// new entries start at its shared length, where the last block's copy ends; a parent's appended
// entries start at or after every prefix shared from it; popped blocks are free (count 0), so
// no fork or finished sequence touches their counts. If the step does not fit the free stack
// (or an earlier step failed) nothing but the metadata of an empty step is written and the
// last block sets the error word, exactly as update_kernel does.

constexpr int kStepThreads = 256;
constexpr int kMaxStepCtas = 256;
// Most bytes of header + batch triples staged in dynamic shared memory (with the 8.5 KiB of
// static shared memory this stays under the 48 KiB available without opting in).
constexpr int kMaxStagedBytes = 32768;

template <int kCap>
struct alignas(16) ParamDesc {
  int32_t v[kCap];
};

__device__ __forceinline__ int4 add4(int4 a, int4 b) {
  return make_int4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
}

// One owned batch row (all threads of the block; no barrier inside). r = (seq, prior_len,
// new_tokens, source row), pref = exclusive prefixes (new blocks, q, k, kv blocks).
__device__ __forceinline__ void step_row(const Tables& t, const Outputs& o, int i, int4 r,
                                         int4 pref, int top, bool fail) {
  const int p = r.y;
  const int n = r.z;
  int32_t* slots = o.slot_mapping + pref.y;
  if (fail) {
    for (int k = threadIdx.x; k < n; k += kStepThreads) slots[k] = -1;
    return;
  }
  const int bs = t.block_size;
  const int sh = t.shift;
  const int width = t.width;
  const int old_blocks = blocks_for(p, bs, sh);
  const int blocks = blocks_for(p + n, bs, sh);
  const int32_t* from = t.rows + static_cast<size_t>(r.w) * width;  // entries < old_blocks
  int32_t* row = t.rows + static_cast<size_t>(r.x) * width;
  const int fresh = top - 1 - pref.x + old_blocks;  // new entry j is free_stack[fresh - j]
  int32_t* table = o.block_table + static_cast<size_t>(i) * width;
  int32_t* indices = o.paged_kv_indices + pref.w;
  for (int j = threadIdx.x; j < width; j += kStepThreads) {
    int b = 0;
    if (j < old_blocks) {
      b = from[j];
    } else if (j < blocks) {
      b = t.free_stack[fresh - j];
      row[j] = b;
      t.refcount[b] = 1;
    }
    table[j] = b;
    if (j < blocks) indices[j] = b;
  }
  for (int k = threadIdx.x; k < n; k += kStepThreads) {
    const int pos = p + k;
    const int jb = pos >> sh;
    const int b = jb < old_blocks ? from[jb] : t.free_stack[fresh - jb];
    slots[k] = (b << sh) + (pos & (bs - 1));
  }
}

// `desc` is a generic pointer: a __grid_constant__ kernel parameter or device memory. When
// `staged`, dynamic shared memory holds desc_padded_ints(kDescHeaderInts + 3 * n_batch) ints.
__device__ __forceinline__ void step_body(const Tables& t, const Outputs& o, const int32_t* desc,
                                          bool staged) {
  extern __shared__ int4 s_stage[];
  __shared__ int4 s_warp[32];
  __shared__ int4 s_row[kStepThreads];   // owned rows of the chunk: seq, p, n, source row
  __shared__ int4 s_pref[kStepThreads];  // their exclusive prefixes
  __shared__ int s_scan[32];
  __shared__ int s_last;
  const int tid = threadIdx.x;
  const int grid = static_cast<int>(gridDim.x);
  const int cta = static_cast<int>(blockIdx.x);
  const int n_batch = desc[kDescBatch];
  const int n_finished = desc[kDescFinished];
  const int n_forks = desc[kDescForks];
  const int need_total = desc[kDescNewBlocks];
  const int32_t* batch = desc + kDescHeaderInts;
  const int32_t* finished = batch + 3 * n_batch;
  const int32_t* forks = finished + n_finished;
  const int bs = t.block_size;
  const int sh = t.shift;

  // 1. Read the state every block decides on; stage.
  const int top = t.state[kFreeTop];
  const bool fail = t.state[kError] != 0 || need_total > top;  // same in every thread and block
  if (staged) {                                                // uniform
    const int n4 = (kDescHeaderInts + 3 * n_batch + 3) / 4;    // desc_padded_ints / 4
    const int4* src = reinterpret_cast<const int4*>(desc);
    for (int k = tid; k < n4; k += kStepThreads) s_stage[k] = src[k];
    __syncthreads();
    batch = reinterpret_cast<const int32_t*>(s_stage) + kDescHeaderInts;
  }
  if (cta == 0 && tid == 0) {
    o.header[0] = n_batch;
    o.header[1] = desc[kDescTokens];
    o.header[2] = fail ? 0 : desc[kDescKvIndices];
    o.header[3] = fail ? 0 : desc[kDescMaxQ];
    o.header[4] = fail ? 0 : desc[kDescMaxK];
    o.header[5] = bs;
    o.header[6] = t.width;
    o.header[7] = 0;
    o.cu_seqlens_q[0] = 0;
    o.cu_seqlens_k[0] = 0;
    o.paged_kv_indptr[0] = 0;
  }

  // 2. Scan the rows in chunks; this block's rows of each chunk right after its scan.
  const int scan_rows = cta < n_batch ? n_batch : 0;  // blocks without rows skip (uniform)
  int4 carry = make_int4(0, 0, 0, 0);                 // need, q, k, kv
  for (int base = 0; base < scan_rows; base += kStepThreads) {
    const int i = base + tid;
    int4 r = make_int4(0, 0, 0, 0);
    int4 v = make_int4(0, 0, 0, 0);
    if (i < n_batch) {
      r = make_int4(batch[3 * i], batch[3 * i + 1], batch[3 * i + 2], 0);
      const int kv = blocks_for(r.y + r.z, bs, sh);
      v = make_int4(kv - blocks_for(r.y, bs, sh), r.z, r.y + r.z, kv);
    }
    int4 total;
    const int4 off = add4(carry, block_exclusive_scan<kStepThreads>(v, &total, s_warp));
    if (i < n_batch && i % grid == cta) {
      r.w = r.x;  // a fork child's old entries are its parent's
      for (int f = 0; f < n_forks; ++f)
        if (forks[3 * f + 1] == r.x) r.w = forks[3 * f];
      s_row[tid] = r;
      s_pref[tid] = off;
      o.seq_lens[i] = fail ? 0 : v.z;
      o.cu_seqlens_q[i + 1] = fail ? 0 : off.y + v.y;
      o.cu_seqlens_k[i + 1] = fail ? 0 : off.z + v.z;
      o.paged_kv_indptr[i + 1] = fail ? 0 : off.w + v.w;
      o.paged_kv_last_page_len[i] = fail ? 0 : v.z - (v.w - 1) * bs;
    }
    carry = add4(carry, total);
    __syncthreads();  // s_row / s_pref written
    const int chunk = min(kStepThreads, n_batch - base);
    for (int k = (cta + grid - base % grid) % grid; k < chunk; k += grid)
      step_row(t, o, base + k, s_row[k], s_pref[k], top, fail);
    __syncthreads();  // s_row / s_pref are rewritten by the next chunk
  }

  // 3. Arrive; the last block applies the rest.
  __threadfence();  // this block's reads of the stack and writes are done device-wide
  __syncthreads();
  if (tid == 0) s_last = atomicAdd(&t.state[kArrived], 1) == grid - 1;
  __syncthreads();
  if (!s_last) return;  // uniform
  __threadfence();
  if (fail) {
    if (tid == 0) {
      t.state[kError] = 1;
      t.state[kStepOk] = 0;
      t.state[kArrived] = 0;
    }
    return;
  }
  for (int f = 0; f < n_forks; ++f) {  // children are distinct and never parents: any order
    const int parent = forks[3 * f];
    const int child = forks[3 * f + 1];
    const int shared = forks[3 * f + 2] >> sh;
    const int32_t* from = t.rows + static_cast<size_t>(parent) * t.width;
    int32_t* to = t.rows + static_cast<size_t>(child) * t.width;
    for (int j = tid; j < shared; j += kStepThreads) {
      const int b = from[j];
      to[j] = b;
      atomicAdd(&t.refcount[b], 1);
    }
    if (tid == 0) t.lens[child] = shared << sh;
  }
  __syncthreads();  // a fork child in the batch gets its new length below
  for (int i = tid; i < n_batch; i += kStepThreads)
    t.lens[batch[3 * i]] = batch[3 * i + 1] + batch[3 * i + 2];
  // Finished sequences (never in the batch, never fork children) drop their references in
  // order; unreferenced blocks are pushed in row order.
  int new_top = top - need_total;
  for (int f = 0; f < n_finished; ++f) {
    const int seq = finished[f];
    const int count = blocks_for(t.lens[seq], bs, sh);
    const int32_t* r = t.rows + static_cast<size_t>(seq) * t.width;
    for (int base = 0; base < count; base += kStepThreads) {
      const int j = base + tid;
      int freed = 0, b = 0;
      if (j < count) {
        b = r[j];
        freed = atomicSub(&t.refcount[b], 1) == 1 ? 1 : 0;
      }
      const unsigned ballot = __ballot_sync(kFullMask, freed);
      const int lane = tid & 31;
      const int warp = tid >> 5;
      if (lane == 0) s_scan[warp] = __popc(ballot);
      __syncthreads();
      int warp_before = 0, chunk = 0;
      for (int w = 0; w < kStepThreads / 32; ++w) {
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
    t.state[kArrived] = 0;
  }
}

template <int kCap>
__global__ void __launch_bounds__(kStepThreads)
    step_kernel_params(Tables t, Outputs o, const __grid_constant__ ParamDesc<kCap> desc) {
  step_body(t, o, desc.v, true);
}

__global__ void __launch_bounds__(kStepThreads)
    step_kernel_global(Tables t, Outputs o, const int32_t* desc, int staged) {
  step_body(t, o, desc, staged != 0);
}

int step_grid(int32_t rows) {
  return rows < 1 ? 1 : (rows < kMaxStepCtas ? rows : kMaxStepCtas);
}

size_t staged_bytes(int32_t rows) {
  return static_cast<size_t>(desc_padded_ints(kDescHeaderInts + 3 * rows)) * sizeof(int32_t);
}

template <int kCap>
cudaError_t launch_params(const Tables& t, const Outputs& o, const int32_t* host_desc, int32_t rows,
                          cudaStream_t stream) {
  static_assert(kCap % 4 == 0 && kCap <= kMaxParamDescInts);
  static_assert(static_cast<size_t>(kMaxParamDescInts) * 4 <= kMaxStagedBytes);
  void* args[] = {const_cast<Tables*>(&t), const_cast<Outputs*>(&o),
                  const_cast<int32_t*>(host_desc)};
  return cudaLaunchKernel(reinterpret_cast<const void*>(&step_kernel_params<kCap>),
                          dim3(step_grid(rows)), dim3(kStepThreads), args, staged_bytes(rows),
                          stream);
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

cudaError_t launch_step_params(const Tables& t, const Outputs& o, const int32_t* host_desc,
                               int32_t n_ints, cudaStream_t stream) {
  const int32_t rows = host_desc[kDescBatch];
  cudaError_t e = cudaErrorInvalidValue;
  // The smallest parameter block that holds the descriptor: every launch copies all of it.
  if (n_ints <= 128) {
    e = launch_params<128>(t, o, host_desc, rows, stream);
  } else if (n_ints <= 512) {
    e = launch_params<512>(t, o, host_desc, rows, stream);
  } else if (n_ints <= 2048) {
    e = launch_params<2048>(t, o, host_desc, rows, stream);
  } else if (n_ints <= kMaxParamDescInts) {
    e = launch_params<kMaxParamDescInts>(t, o, host_desc, rows, stream);
  }
  return e;
}

cudaError_t launch_step_global(const Tables& t, const Outputs& o, const int32_t* device_desc,
                               int32_t max_batch, cudaStream_t stream) {
  const bool staged = staged_bytes(max_batch) <= static_cast<size_t>(kMaxStagedBytes);
  step_kernel_global<<<step_grid(max_batch), kStepThreads, staged ? staged_bytes(max_batch) : 0,
                       stream>>>(t, o, device_desc, staged ? 1 : 0);
  return cudaGetLastError();
}

}  // namespace kvpager::batch::gpu
