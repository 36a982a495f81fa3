#pragma once
// Where a block-table manager gets its block ids. kvpager's KvCache (alloc(n, span<BlockId>),
// free(span<const BlockId>)) plugs in through a three-line adapter; FreeListBlockSource is the
// default. Implementations need not be thread-safe: the manager calls them from its own thread.
#include <cstddef>
#include <span>

#include "kvpager/common/ids.hpp"

namespace kvpager::batch {

class BlockSource {
 public:
  virtual ~BlockSource() = default;
  // Writes n distinct free block ids into out[0, n) (out.size() >= n). All or nothing: throws
  // OutOfMemory (nothing taken) when fewer than n can be handed out.
  virtual void alloc(size_t n, std::span<BlockId> out) = 0;
  // Returns blocks taken by alloc. Must not throw for ids it handed out.
  virtual void free(std::span<const BlockId> blocks) = 0;
  // Blocks an alloc can hand out now.
  virtual size_t free_blocks() const = 0;
  // Every id handed out is in [0, id_limit()).
  virtual size_t id_limit() const = 0;
};

}  // namespace kvpager::batch
