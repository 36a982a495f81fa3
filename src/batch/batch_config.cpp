#include "kvpager/batch/batch_config.hpp"

#include <cstdint>
#include <string>

#include "kvpager/common/error.hpp"

namespace kvpager::batch {

void BatchConfig::validate() const {
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw InvalidArgument("batch config: " + what);
  };
  need(block_size >= 1 && block_size <= 256 && (block_size & (block_size - 1)) == 0,
       "block_size " + std::to_string(block_size) + " must be a power of two in [1, 256]");
  need(num_blocks >= 1, "num_blocks must be >= 1");
  need(max_seqs >= 1, "max_seqs must be >= 1");
  need(max_batch >= 1, "max_batch must be >= 1");
  need(max_blocks_per_seq >= 1, "max_blocks_per_seq must be >= 1");
  need(max_tokens_per_step >= 1, "max_tokens_per_step must be >= 1");
  need(max_forks_per_step >= 0, "max_forks_per_step must be >= 0");
  // Every int32 in the metadata (lengths, indptr totals) must fit.
  need(static_cast<int64_t>(max_blocks_per_seq) * block_size <= INT32_MAX,
       "max_blocks_per_seq * block_size must fit in int32");
  need(static_cast<int64_t>(max_batch) * max_blocks_per_seq <= INT32_MAX / 2,
       "max_batch * max_blocks_per_seq is too large");
  need(static_cast<int64_t>(max_batch) * max_blocks_per_seq * block_size <= INT32_MAX,
       "max_batch * max_blocks_per_seq * block_size (cu_seqlens_k total) must fit in int32");
  need(static_cast<int64_t>(num_blocks) * block_size <= INT32_MAX,
       "num_blocks * block_size (slot ids) must fit in int32");
}

}  // namespace kvpager::batch
