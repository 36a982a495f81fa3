#pragma once
// Configuration of one block-table manager (CPU or GPU): sizes of every table, fixed at
// construction so that no step allocates. Filled by the caller (the bench fills it from flags).
#include <cstdint>

namespace kvpager::batch {

struct BatchConfig {
  // Tokens per KV block: a power of two in [1, 256]. 1 is SGLang's token-level pool.
  int32_t block_size = 16;
  // Block ids handed out are in [0, num_blocks). For the default free-list source and for the
  // GPU path this is the pool size.
  int32_t num_blocks = 1 << 16;
  // Sequence ids are slots in [0, max_seqs) chosen by the caller (SGLang's req_pool_idx).
  int32_t max_seqs = 512;
  // Most sequences in one step's batch (rows of block_table).
  int32_t max_batch = 256;
  // Columns of block_table; a sequence holds at most this many blocks
  // (max_blocks_per_seq * block_size tokens).
  int32_t max_blocks_per_seq = 256;
  // Most new tokens in one step (length of slot_mapping).
  int32_t max_tokens_per_step = 8192;
  // Most forks in one step.
  int32_t max_forks_per_step = 64;

  // Throws InvalidArgument naming the first bad field.
  void validate() const;
};

}  // namespace kvpager::batch
