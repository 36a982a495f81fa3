#include "kvpager/kv/block_allocator.hpp"

#include <algorithm>
#include <bit>
#include <string>

#include "kvpager/common/error.hpp"

namespace kvpager::kv {

namespace {
constexpr uint8_t kFree = 0, kUsed = 1, kUnusable = 2, kFreeing = 3;
}

BlockAllocator::BlockAllocator(std::vector<BlockRange> pages, int32_t num_blocks)
    : pages_(std::move(pages)), num_blocks_(num_blocks) {
  const size_t n = pages_.size();
  stack_.assign(static_cast<size_t>(num_blocks_), 0);
  top_.assign(n, 0);
  used_.assign(n, 0);
  page_of_.assign(static_cast<size_t>(num_blocks_), kNone);
  block_state_.assign(static_cast<size_t>(num_blocks_), kUnusable);
  page_state_.assign(n, AllocPageState::kUnmapped);
  prev_.assign(n, kNone);
  next_.assign(n, kNone);
  unmapped_.reserve(n);
  int32_t expected_first = 0;
  for (uint32_t p = 0; p < n; ++p) {
    const BlockRange& pb = pages_[p];
    if (pb.count < 0 || pb.first < expected_first || pb.first + pb.count > num_blocks_) {
      throw InvalidArgument("block allocator: page " + std::to_string(p) +
                            " has an invalid block range");
    }
    if (pb.count > 0) expected_first = pb.first + pb.count;
    max_per_page_ = std::max<uint32_t>(max_per_page_, static_cast<uint32_t>(pb.count));
    for (int32_t b = pb.first; b < pb.first + pb.count; ++b) {
      page_of_[static_cast<size_t>(b)] = p;
      block_state_[static_cast<size_t>(b)] = kFree;
    }
    usable_blocks_ += static_cast<size_t>(pb.count);
  }
  // Unmapped pages that hold blocks, kept in descending order: the lowest page is at the back.
  for (uint32_t p = static_cast<uint32_t>(n); p-- > 0;) {
    if (pages_[p].count > 0) unmapped_.push_back(p);
  }
  unmapped_pages_ = unmapped_.size();
  bucket_head_.assign(max_per_page_ + 1, kNone);
  bucket_bits_.assign(max_per_page_ / 64 + 1, 0);
}

uint32_t* BlockAllocator::list_head(uint32_t page) {
  if (used_[page] == 0) return &free_head_;
  const uint32_t free = free_in(page);
  return free > 0 ? &bucket_head_[free] : nullptr;  // full pages are in no list
}

void BlockAllocator::list_remove(uint32_t page) {
  uint32_t* head = list_head(page);
  if (head == nullptr) return;
  if (prev_[page] != kNone) {
    next_[prev_[page]] = next_[page];
  } else {
    *head = next_[page];
  }
  if (next_[page] != kNone) prev_[next_[page]] = prev_[page];
  prev_[page] = next_[page] = kNone;
  const uint32_t free = free_in(page);
  if (used_[page] != 0 && bucket_head_[free] == kNone) {
    bucket_bits_[free / 64] &= ~(1ull << (free % 64));
  }
}

void BlockAllocator::list_push(uint32_t page) {
  uint32_t* head = list_head(page);
  if (head == nullptr) return;
  if (used_[page] != 0) {
    const uint32_t free = free_in(page);
    bucket_bits_[free / 64] |= 1ull << (free % 64);
  }
  prev_[page] = kNone;
  next_[page] = *head;
  if (*head != kNone) prev_[*head] = page;
  *head = page;
}

bool BlockAllocator::try_alloc(size_t n, std::span<BlockId> out) {
  if (out.size() < n) throw InvalidArgument("alloc: output span is smaller than the count");
  if (n > free_mapped_blocks_) return false;
  size_t i = 0;
  while (i < n) {
    uint32_t page = kNone;
    for (size_t w = 0; w < bucket_bits_.size() && page == kNone; ++w) {
      if (bucket_bits_[w] != 0) {
        page = bucket_head_[w * 64 + static_cast<size_t>(std::countr_zero(bucket_bits_[w]))];
      }
    }
    if (page == kNone) page = free_head_;
    list_remove(page);
    if (used_[page] == 0) --free_pages_count_;
    const int32_t base = pages_[page].first;
    const uint32_t take = std::min<uint32_t>(static_cast<uint32_t>(n - i), free_in(page));
    for (uint32_t k = 0; k < take; ++k) {
      const int32_t b = stack_[static_cast<size_t>(base) + --top_[page]];
      block_state_[static_cast<size_t>(b)] = kUsed;
      out[i++] = BlockId{b};
    }
    used_[page] += take;
    list_push(page);
  }
  free_mapped_blocks_ -= n;
  used_blocks_ += n;
  return true;
}

void BlockAllocator::free(std::span<const BlockId> ids) {
  size_t checked = 0;
  auto undo = [&] {
    for (size_t j = 0; j < checked; ++j) block_state_[static_cast<size_t>(ids[j].value)] = kUsed;
  };
  for (; checked < ids.size(); ++checked) {
    const int32_t b = ids[checked].value;
    const char* why = nullptr;
    if (b < 0 || b >= num_blocks_) {
      why = "is not a block of this cache";
    } else if (block_state_[static_cast<size_t>(b)] == kFreeing) {
      why = "appears twice in the call";
    } else if (block_state_[static_cast<size_t>(b)] != kUsed) {
      why = "is not in use (double free?)";
    }
    if (why) {
      undo();
      throw InvalidArgument("free: block " + std::to_string(b) + " " + why + "; nothing was freed");
    }
    block_state_[static_cast<size_t>(b)] = kFreeing;
  }
  for (const BlockId id : ids) {
    const auto b = static_cast<size_t>(id.value);
    const uint32_t page = page_of_[b];
    list_remove(page);
    stack_[static_cast<size_t>(pages_[page].first) + top_[page]++] = id.value;
    block_state_[b] = kFree;
    if (--used_[page] == 0) ++free_pages_count_;
    list_push(page);
  }
  free_mapped_blocks_ += ids.size();
  used_blocks_ -= ids.size();
}

void BlockAllocator::reserve_block(BlockId id) {
  const auto b = static_cast<size_t>(id.value);
  if (id.value < 0 || id.value >= num_blocks_ || block_state_[b] != kFree ||
      page_state_[page_of_[b]] != AllocPageState::kMapped) {
    throw InvalidArgument("reserve_block: block " + std::to_string(id.value) +
                          " is not a free block of a mapped page");
  }
  const uint32_t page = page_of_[b];
  const size_t base = static_cast<size_t>(pages_[page].first);
  list_remove(page);
  if (used_[page] == 0) --free_pages_count_;
  for (uint32_t k = 0; k < top_[page]; ++k) {
    if (stack_[base + k] == id.value) {
      std::swap(stack_[base + k], stack_[base + top_[page] - 1]);
      break;
    }
  }
  --top_[page];
  ++used_[page];
  block_state_[b] = kUsed;
  list_push(page);
  --free_mapped_blocks_;
  ++used_blocks_;
}

bool BlockAllocator::in_use(BlockId id) const {
  return id.value >= 0 && id.value < num_blocks_ &&
         block_state_[static_cast<size_t>(id.value)] == kUsed;
}

std::optional<uint32_t> BlockAllocator::claim_unmapped_page() {
  if (unmapped_.empty()) return std::nullopt;
  const uint32_t page = unmapped_.back();
  unmapped_.pop_back();
  page_state_[page] = AllocPageState::kMapping;
  --unmapped_pages_;
  ++transition_pages_;
  return page;
}

void BlockAllocator::finish_mapping(uint32_t page, bool success) {
  --transition_pages_;
  if (!success) {
    page_state_[page] = AllocPageState::kUnmapped;
    unmapped_.insert(std::lower_bound(unmapped_.begin(), unmapped_.end(), page, std::greater<>()),
                     page);
    ++unmapped_pages_;
    return;
  }
  const BlockRange pb = pages_[page];
  for (int32_t j = 0; j < pb.count; ++j) {
    stack_[static_cast<size_t>(pb.first + j)] = pb.first + pb.count - 1 - j;  // pop lowest first
  }
  top_[page] = static_cast<uint32_t>(pb.count);
  used_[page] = 0;
  page_state_[page] = AllocPageState::kMapped;
  list_push(page);
  free_mapped_blocks_ += static_cast<size_t>(pb.count);
  ++free_pages_count_;
  ++mapped_pages_;
}

std::optional<uint32_t> BlockAllocator::claim_free_page() {
  // The highest free page goes first, so mapped memory stays at the low end of the space.
  uint32_t best = kNone;
  for (uint32_t p = free_head_; p != kNone; p = next_[p]) {
    if (best == kNone || p > best) best = p;
  }
  if (best == kNone) return std::nullopt;
  list_remove(best);
  page_state_[best] = AllocPageState::kUnmapping;
  free_mapped_blocks_ -= static_cast<size_t>(pages_[best].count);
  --free_pages_count_;
  --mapped_pages_;
  ++transition_pages_;
  return best;
}

void BlockAllocator::finish_unmapping(uint32_t page, bool success) {
  --transition_pages_;
  if (success) {
    page_state_[page] = AllocPageState::kUnmapped;
    unmapped_.insert(std::lower_bound(unmapped_.begin(), unmapped_.end(), page, std::greater<>()),
                     page);
    ++unmapped_pages_;
    return;
  }
  page_state_[page] = AllocPageState::kMapped;
  list_push(page);
  free_mapped_blocks_ += static_cast<size_t>(pages_[page].count);
  ++free_pages_count_;
  ++mapped_pages_;
}

}  // namespace kvpager::kv
