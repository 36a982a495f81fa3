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
enum StateField : int { kFreeTop = 0, kError = 1, kStepOk = 2, kStateInts = 4 };

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

// Step descriptor (int32): [n_batch, n_finished, n_forks, num_tokens], then n_batch triples
// (seq, prior_len, new_tokens), n_finished ids, n_forks triples (parent, child, prefix_len).
constexpr int kDescHeaderInts = 4;

// Each returns the launch's cudaError_t (cudaGetLastError).
cudaError_t launch_init(const Tables& t, cudaStream_t stream);
// One thread block: 256 threads when max_batch <= 256, else 1024.
cudaError_t launch_update(const Tables& t, const Outputs& o, const int32_t* desc, int32_t max_batch,
                          cudaStream_t stream);
cudaError_t launch_pack(const Tables& t, const Outputs& o, const int32_t* desc, int32_t max_batch,
                        cudaStream_t stream);

}  // namespace kvpager::batch::gpu
