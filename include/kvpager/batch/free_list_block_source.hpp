#pragma once
// The default BlockSource: a LIFO stack of the ids [0, num_blocks). alloc pops from the top
// (a fresh pool hands out 0, 1, 2, ...), free pushes in the given order, so the most recently
// freed block is reused first. The GPU path keeps the same stack on the device, which is why
// both paths hand out identical ids. O(n) per call, no allocation after construction; not
// thread-safe.
#include <cstdint>
#include <vector>

#include "kvpager/batch/block_source.hpp"

namespace kvpager::batch {

class FreeListBlockSource final : public BlockSource {
 public:
  explicit FreeListBlockSource(int32_t num_blocks);  // InvalidArgument if num_blocks < 1

  void alloc(size_t n, std::span<BlockId> out) override;
  // InvalidArgument (nothing freed) for an id out of range or a free beyond the pool size.
  void free(std::span<const BlockId> blocks) override;
  size_t free_blocks() const override { return top_; }
  size_t id_limit() const override { return stack_.size(); }

 private:
  std::vector<int32_t> stack_;  // stack_[0, top_) are free; top of stack at top_ - 1
  size_t top_ = 0;
};

}  // namespace kvpager::batch
