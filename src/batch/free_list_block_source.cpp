#include "kvpager/batch/free_list_block_source.hpp"

#include <string>

#include "kvpager/common/error.hpp"

namespace kvpager::batch {

FreeListBlockSource::FreeListBlockSource(int32_t num_blocks) {
  if (num_blocks < 1) throw InvalidArgument("free list: num_blocks must be >= 1");
  stack_.resize(static_cast<size_t>(num_blocks));
  // Top of the stack is id 0, so a fresh pool hands out 0, 1, 2, ...
  for (int32_t i = 0; i < num_blocks; ++i) stack_[static_cast<size_t>(i)] = num_blocks - 1 - i;
  top_ = stack_.size();
}

void FreeListBlockSource::alloc(size_t n, std::span<BlockId> out) {
  if (n > out.size()) throw InvalidArgument("free list: output span smaller than the request");
  if (n > top_)
    throw OutOfMemory("out of KV blocks: " + std::to_string(n) + " needed, " +
                      std::to_string(top_) + " free of " + std::to_string(stack_.size()));
  for (size_t k = 0; k < n; ++k) out[k] = BlockId(stack_[top_ - 1 - k]);
  top_ -= n;
}

void FreeListBlockSource::free(std::span<const BlockId> blocks) {
  if (blocks.size() > stack_.size() - top_)
    throw InvalidArgument("free list: freeing more blocks than are in use");
  for (BlockId b : blocks)
    if (b.value < 0 || static_cast<size_t>(b.value) >= stack_.size())
      throw InvalidArgument("free list: block id " + std::to_string(b.value) + " out of range");
  for (BlockId b : blocks) stack_[top_++] = b.value;
}

}  // namespace kvpager::batch
