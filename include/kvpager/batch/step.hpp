#pragma once
// One scheduling step as the caller describes it to a block-table manager (CPU or GPU).
//
// A step is applied in this order, the same on both implementations:
//   1. forks: each child slot starts sharing the parent's first prefix_len / block_size full
//      blocks (reference counted); its length becomes that many blocks * block_size tokens.
//   2. batch: every entry's sequence grows from prior_len to prior_len + new_tokens; blocks
//      for the tokens that cross a block boundary are taken from the block source, in batch
//      order, in one all-or-nothing request. A sequence is admitted by its first entry, which
//      has prior_len 0.
//   3. finished: every finished sequence drops its references; blocks no longer referenced go
//      back to the source. Blocks freed by a step serve the next step, never the same one
//      (so a step either fully succeeds or changes nothing).
// Rules (violations throw InvalidArgument and change nothing): ids in [0, max_seqs); a sequence
// appears at most once in the batch and at most once in finished, never in both; a finished
// sequence or fork parent is live; a fork child is not live, is no other fork's child or
// parent, and may appear in the batch with prior_len equal to its shared length; prior_len of a
// live sequence equals its length, of a new one is 0; new_tokens >= 1; sizes within BatchConfig.
#include <cstdint>
#include <span>

namespace kvpager::batch {

struct SeqStep {
  int32_t seq = 0;         // slot id
  int32_t prior_len = 0;   // tokens already in the KV cache
  int32_t new_tokens = 0;  // a prefill chunk, or 1 for a decode step
};

struct Fork {
  int32_t parent = 0;
  int32_t child = 0;
  int32_t prefix_len = 0;  // tokens of the parent to share; only full blocks are shared
};

struct Step {
  std::span<const SeqStep> batch;
  std::span<const int32_t> finished;
  std::span<const Fork> forks;
};

inline constexpr int32_t blocks_for(int64_t tokens, int32_t block_size) {
  return static_cast<int32_t>((tokens + block_size - 1) / block_size);
}

}  // namespace kvpager::batch
