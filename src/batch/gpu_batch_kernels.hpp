#pragma once
// The device side of GpuBatchPreparer (private to src/batch). Plain C++17 structs so that
// nvcc compiles it with the project's CUDA standard. All tables are int32 device arrays.
#include <cuda_runtime_api.h>

#include <cstdint>

namespace kvpager::batch::gpu {

// Persistent device state.
struct Tables {
  int32_t* free_stack;  // [num_blocks]; free ids in [0, state[kFreeTop])
  int32_t* refcount;    // [num_blocks]
  int32_t* rows;        // [max_seqs * width]: each sequence's block ids
  int32_t* lens;        // [max_seqs]: length, -1 when not live
  int32_t* state;       // [kStateInts]
  int32_t* alloc_ids;   // [max new blocks per step]: the ids the step popped, in batch order
  int32_t* alloc_off;   // [max_batch]: where row i's new ids start in alloc_ids
  int32_t block_size;
  int32_t shift;  // log2(block_size)
  int32_t width;  // max_blocks_per_seq
  int32_t num_blocks;
  int32_t max_seqs;
};
// kArrived counts the thread blocks of a fused step that are done (the last one resets it).
enum StateField : int { kFreeTop = 0, kError = 1, kStepOk = 2, kArrived = 3, kStateInts = 4 };

// Where the metadata arrays are (device pointers into one buffer, fixed across steps).
struct Outputs {
  int32_t* header;
  int32_t* seq_lens;
  int32_t* cu_seqlens_q;
  int32_t* cu_seqlens_k;
  int32_t* paged_kv_indptr;
  int32_t* paged_kv_last_page_len;
  int32_t* slot_mapping;
  int32_t* block_table;
  int32_t* paged_kv_indices;
};

// Step descriptor (int32): a header of kDescHeaderInts (DescField), then n_batch triples
// (seq, prior_len, new_tokens), n_finished ids, n_forks triples (parent, child, prefix_len).
// The header's totals come from the host's StepValidator (the same formulas the kernels use
// per row); the batch triples start 16-byte aligned.
enum DescField : int {
  kDescBatch = 0,
  kDescFinished = 1,
  kDescForks = 2,
  kDescTokens = 3,
  kDescNewBlocks = 4,  // blocks the step takes from the free stack
  kDescKvIndices = 5,
  kDescMaxQ = 6,
  kDescMaxK = 7,
  kDescHeaderInts = 8
};
// Most descriptor ints passed as a kernel parameter (CUDA 12.1+: 32764 bytes of parameters on
// Volta and later; this leaves room for Tables and Outputs). A multiple of 4.
constexpr int kMaxParamDescInts = 8000;
// Descriptor ints a buffer must hold for a descriptor of `n` ints: the fused kernel reads the
// header and batch triples in 16-byte pieces.
constexpr int desc_padded_ints(int n) {
  return (n + 3) / 4 * 4;
}

// Each returns the launch's cudaError_t (cudaGetLastError).
cudaError_t launch_init(const Tables& t, cudaStream_t stream);
// One thread block: 256 threads when max_batch <= 256, else 1024.
cudaError_t launch_update(const Tables& t, const Outputs& o, const int32_t* desc, int32_t max_batch,
                          cudaStream_t stream);
cudaError_t launch_pack(const Tables& t, const Outputs& o, const int32_t* desc, int32_t max_batch,
                        cudaStream_t stream);

// The fused step: the whole of update + pack in one launch (min(n_batch, 256) thread blocks of
// 256 threads; the last block to finish applies forks, lengths and frees). Its metadata, block
// ids and state equal update + pack.
// launch_step_params: the descriptor travels as a kernel parameter. `host_desc` is host memory
// of at least kMaxParamDescInts ints, 16-byte aligned, holding `n_ints` <= kMaxParamDescInts
// descriptor ints; it is read during the call and free to reuse when it returns.
cudaError_t launch_step_params(const Tables& t, const Outputs& o, const int32_t* host_desc,
                               int32_t n_ints, cudaStream_t stream);
// launch_step_global: the descriptor is in device memory (desc_padded_ints of its size,
// 16-byte aligned), for steps of at most `max_batch` rows (the grid is sized from it, so a
// captured graph serves every step of the config).
cudaError_t launch_step_global(const Tables& t, const Outputs& o, const int32_t* device_desc,
                               int32_t max_batch, cudaStream_t stream);

}  // namespace kvpager::batch::gpu
