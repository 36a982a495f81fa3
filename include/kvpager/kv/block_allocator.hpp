#pragma once
// BlockAllocator: which blocks are in use, which pages are mapped, and which page the next
// block comes from. Pure bookkeeping: it never maps or unmaps (KvCache does, through KvSpace).
//
// Policy (best fit): blocks come first from partially used pages, fullest first, so pages
// empty out as a whole and can be unmapped; then from fully free mapped pages. Blocks of a page
// are handed out only while the page is mapped.
//
// Hot path: try_alloc() and free() allocate nothing and take no syscall: per-page free stacks
// live in one preallocated array, and pages sit in intrusive lists bucketed by free count.
// Thread safety: none; KvCache serialises calls under its mutex.
// Errors: free() of an unknown id, a block not in use, or an id twice in one call throws
// InvalidArgument and changes nothing.
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "kvpager/common/ids.hpp"
#include "kvpager/kv/block_range.hpp"

namespace kvpager::kv {

enum class AllocPageState : uint8_t { kUnmapped, kMapping, kMapped, kUnmapping };

class BlockAllocator {
 public:
  // pages[p] = blocks lying wholly inside page p (ascending, disjoint). num_blocks = id range.
  BlockAllocator(std::vector<BlockRange> pages, int32_t num_blocks);

  // Takes n blocks from mapped pages, all or nothing: false (nothing changed) if fewer than n
  // are free in mapped pages.
  [[nodiscard]] bool try_alloc(size_t n, std::span<BlockId> out);
  void free(std::span<const BlockId> ids);
  // Marks one block permanently in use (the null block). Its page must be mapped.
  void reserve_block(BlockId id);

  // Page lifecycle, driven by KvCache around KvSpace::map_page / unmap_page.
  [[nodiscard]] std::optional<uint32_t> claim_unmapped_page();  // lowest unmapped page -> kMapping
  void finish_mapping(uint32_t page, bool success);             // kMapping -> kMapped or kUnmapped
  [[nodiscard]] std::optional<uint32_t>
  claim_free_page();  // a mapped page with no used block -> kUnmapping
  void finish_unmapping(uint32_t page, bool success);

  size_t free_mapped_blocks() const { return free_mapped_blocks_; }
  size_t used_blocks() const { return used_blocks_; }
  size_t free_pages() const { return free_pages_count_; }  // mapped, no block in use
  size_t mapped_pages() const { return mapped_pages_; }    // kMapped (any use)
  size_t pages_in_transition() const { return transition_pages_; }
  size_t unmapped_pages() const { return unmapped_pages_; }
  size_t usable_blocks() const { return usable_blocks_; }
  size_t num_pages() const { return pages_.size(); }
  uint32_t max_blocks_per_page() const { return max_per_page_; }
  AllocPageState page_state(uint32_t page) const { return page_state_[page]; }
  uint32_t used_in_page(uint32_t page) const { return used_[page]; }
  bool in_use(BlockId id) const;
  BlockRange page_blocks(uint32_t page) const { return pages_[page]; }

 private:
  static constexpr uint32_t kNone = UINT32_MAX;
  // The list a page belongs in for its current counts (nullptr: a full page, in no list).
  uint32_t* list_head(uint32_t page);
  void list_remove(uint32_t page);
  void list_push(uint32_t page);  // by current free count; fully free pages go to free_head_
  uint32_t free_in(uint32_t page) const {
    return static_cast<uint32_t>(pages_[page].count) - used_[page];
  }

  std::vector<BlockRange> pages_;
  int32_t num_blocks_;
  std::vector<int32_t> stack_;        // per-page free stacks: page p uses [first, first+count)
  std::vector<uint32_t> top_;         // free entries in each page's stack
  std::vector<uint32_t> used_;        // used blocks per page
  std::vector<uint32_t> page_of_;     // block -> page (kNone: never handed out)
  std::vector<uint8_t> block_state_;  // 0 free, 1 in use, 2 unusable, 3 being freed (in free())
  std::vector<AllocPageState> page_state_;
  // Intrusive doubly linked lists of mapped pages with free blocks.
  std::vector<uint32_t> prev_, next_;
  std::vector<uint32_t> bucket_head_;  // partially used pages by free count (1..max-1)
  std::vector<uint64_t> bucket_bits_;  // non-empty buckets
  uint32_t free_head_ = kNone;         // fully free mapped pages
  std::vector<uint32_t> unmapped_;     // min-heap-ish: kept sorted descending, pop lowest from back
  uint32_t max_per_page_ = 0;
  size_t free_mapped_blocks_ = 0;
  size_t used_blocks_ = 0;
  size_t free_pages_count_ = 0;
  size_t mapped_pages_ = 0;
  size_t transition_pages_ = 0;
  size_t unmapped_pages_ = 0;
  size_t usable_blocks_ = 0;
};

}  // namespace kvpager::kv
