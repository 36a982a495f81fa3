#include "kvpager/kv/kv_space.hpp"

#include <span>

#include "kvpager/common/error.hpp"
#include "kvpager/common/units.hpp"

namespace kvpager::kv {

namespace {
const char* state_name(PageState s) {
  switch (s) {
    case PageState::kReserved:
      return "reserved (unmapped)";
    case PageState::kMapping:
      return "being mapped";
    case PageState::kMapped:
      return "mapped";
    case PageState::kUnmapping:
      return "being unmapped";
  }
  return "?";
}
}  // namespace

KvSpace::KvSpace(std::shared_ptr<vmm::Backend> backend, pool::PagePool& pool, KvSpaceConfig config)
    : backend_(std::move(backend)), pool_(pool), config_(config) {
  const KvGeometry& g = config_.geometry;
  g.validate();
  if (config_.num_blocks == 0) throw InvalidArgument("KV space: num_blocks must be positive");
  if (config_.num_blocks > static_cast<uint64_t>(INT32_MAX)) {
    throw InvalidArgument("KV space: num_blocks exceeds the int32 block-id range");
  }
  handle_bytes_ = pool_.handle_bytes();
  num_tensors_ = g.num_layers * g.components();
  if (config_.layout == KvLayout::kInterleaved) {
    cell_bytes_ = g.block_bytes_all_layers();
    if (cell_bytes_ > handle_bytes_) {
      throw InvalidArgument("KV space: one interleaved block (all " + std::to_string(g.num_layers) +
                            " layers) takes " + format_size(cell_bytes_) +
                            ", more than the handle size " + format_size(handle_bytes_) +
                            "; use a handle size of at least " +
                            format_size(round_up(cell_bytes_, backend_->granularity())));
    }
    reservation_bytes_ = round_up(config_.num_blocks * cell_bytes_, handle_bytes_);
    num_pages_ = static_cast<uint32_t>(reservation_bytes_ / handle_bytes_);
    handles_per_page_ = 1;
  } else {
    cell_bytes_ = g.block_bytes();
    if (cell_bytes_ > handle_bytes_) {
      throw InvalidArgument("KV space: one block takes " + format_size(cell_bytes_) +
                            ", more than the handle size " + format_size(handle_bytes_));
    }
    tensor_bytes_ = round_up(config_.num_blocks * cell_bytes_, handle_bytes_);
    num_pages_ = static_cast<uint32_t>(tensor_bytes_ / handle_bytes_);
    reservation_bytes_ = tensor_bytes_ * num_tensors_;
    handles_per_page_ = num_tensors_;
  }
  handles_.assign(static_cast<size_t>(num_pages_) * handles_per_page_, vmm::PhysicalHandle{});
  states_ = std::make_unique<std::atomic<PageState>[]>(num_pages_);
  for (uint32_t p = 0; p < num_pages_; ++p) states_[p].store(PageState::kReserved);
  // Alignment: the largest power of two dividing the handle size (the driver takes only powers
  // of two; a handle may be any multiple of the granularity, e.g. a 56 MiB interleaved cell run
  // of a 28-layer model). Handles sit at multiples of their size from the base.
  base_ = backend_->reserve(reservation_bytes_, handle_bytes_ & (~handle_bytes_ + 1));
  if (config_.zero_fill_unmapped) {
    try {
      setup_zero_page();
    } catch (...) {
      backend_->free_reservation(base_, reservation_bytes_);
      throw;
    }
  }
}

void KvSpace::setup_zero_page() {
  zero_handle_ = backend_->create(handle_bytes_);
  std::vector<uintptr_t> done;
  done.reserve(static_cast<size_t>(num_pages_) * handles_per_page_);
  try {
    const uintptr_t first = page_address(0, 0);
    backend_->map(first, handle_bytes_, zero_handle_, 0);
    backend_->set_access(first, handle_bytes_, vmm::Access::kReadWrite);
    backend_->zero_fill(first, handle_bytes_);
    try {
      backend_->set_access(first, handle_bytes_, vmm::Access::kReadOnly);
    } catch (const DriverError&) {
      zero_read_only_ = false;  // the device refuses read-only mappings: share it read-write
    }
    done.push_back(first);
    for (uint32_t p = 0; p < num_pages_; ++p) {
      for (uint32_t t = 0; t < handles_per_page_; ++t) {
        const uintptr_t va = page_address(t, p);
        if (va == first) continue;
        map_zero(va);
        done.push_back(va);
      }
    }
  } catch (...) {
    for (uintptr_t va : done) backend_->unmap(va, handle_bytes_);
    backend_->release(zero_handle_);
    zero_handle_ = {};
    throw;
  }
}

KvSpace::~KvSpace() {
  // Never throw from here: a failing driver call leaves memory to the process exit.
  try {
    for (uint32_t p = 0; p < num_pages_; ++p) {
      const PageState s = states_[p].load();
      std::span<vmm::PhysicalHandle> hs(&handles_[static_cast<size_t>(p) * handles_per_page_],
                                        handles_per_page_);
      for (uint32_t t = 0; t < handles_per_page_; ++t) {
        const uintptr_t va = page_address(t, p);
        if (s == PageState::kMapped || zero_handle_.valid()) backend_->unmap(va, handle_bytes_);
      }
      if (s == PageState::kMapped) pool_.give_back(hs);
    }
    if (zero_handle_.valid()) backend_->release(zero_handle_);
    backend_->free_reservation(base_, reservation_bytes_);
  } catch (...) {
  }
}

uintptr_t KvSpace::page_address(uint32_t tensor, uint32_t page) const {
  return base_ + tensor * tensor_bytes_ + static_cast<uint64_t>(page) * handle_bytes_;
}

BlockRange KvSpace::blocks_of_page(PageId page) const {
  check_page(page);
  return page_blocks(handle_bytes_, cell_bytes_, config_.num_blocks, page.value);
}

BlockRange page_blocks(uint64_t handle_bytes, uint64_t cell_bytes, uint64_t num_blocks,
                       uint32_t page) {
  const uint64_t start = static_cast<uint64_t>(page) * handle_bytes;
  const uint64_t end = start + handle_bytes;
  const uint64_t first = (start + cell_bytes - 1) / cell_bytes;
  const uint64_t last = std::min<uint64_t>(end / cell_bytes, num_blocks);  // exclusive
  if (last <= first) return {static_cast<int32_t>(first), 0};
  return {static_cast<int32_t>(first), static_cast<int32_t>(last - first)};
}

TensorView KvSpace::tensor(uint32_t layer, uint32_t component) const {
  const KvGeometry& g = config_.geometry;
  if (layer >= g.num_layers || component >= g.components()) {
    throw InvalidArgument("KV space: no tensor for layer " + std::to_string(layer) + " component " +
                          std::to_string(component) + " (" + std::to_string(g.num_layers) +
                          " layers, " + std::to_string(g.components()) + " components)");
  }
  TensorView v;
  const uint32_t index = layer * g.components() + component;
  v.base = config_.layout == KvLayout::kInterleaved ? base_ + index * g.block_bytes()
                                                    : base_ + index * tensor_bytes_;
  v.block_stride_bytes = cell_bytes_;
  v.num_blocks = config_.num_blocks;
  v.block_size = g.block_size;
  v.kv_heads = g.kv_heads;
  v.head_dim = g.head_dim;
  v.dtype_bytes = g.dtype_bytes;
  return v;
}

void KvSpace::check_page(PageId page) const {
  if (page.value >= num_pages_) {
    throw InvalidArgument("KV space: page " + std::to_string(page.value) +
                          " is beyond the virtual range of " + std::to_string(num_pages_) +
                          " pages");
  }
}

PageState KvSpace::state(PageId page) const {
  check_page(page);
  return states_[page.value].load(std::memory_order_acquire);
}

void KvSpace::transition(PageId page, PageState from, PageState to, const char* op) {
  check_page(page);
  PageState expected = from;
  if (!states_[page.value].compare_exchange_strong(expected, to, std::memory_order_acq_rel)) {
    throw InvalidArgument(std::string("KV space: cannot ") + op + " page " +
                          std::to_string(page.value) + ": it is " + state_name(expected));
  }
}

void KvSpace::map_zero(uintptr_t va) {
  backend_->map(va, handle_bytes_, zero_handle_, 0);
  try {
    backend_->set_access(va, handle_bytes_,
                         zero_read_only_ ? vmm::Access::kReadOnly : vmm::Access::kReadWrite);
  } catch (...) {
    backend_->unmap(va, handle_bytes_);  // all or nothing
    throw;
  }
}

void KvSpace::map_page(PageId page) {
  transition(page, PageState::kReserved, PageState::kMapping, "map");
  std::span<vmm::PhysicalHandle> hs(&handles_[static_cast<size_t>(page.value) * handles_per_page_],
                                    handles_per_page_);
  try {
    pool_.acquire(hs);
  } catch (...) {
    states_[page.value].store(PageState::kReserved, std::memory_order_release);
    throw;
  }
  const bool zero = zero_handle_.valid();
  uint32_t done = 0;
  try {
    for (; done < handles_per_page_; ++done) {
      const uintptr_t va = page_address(done, page.value);
      if (zero) backend_->unmap(va, handle_bytes_);
      try {
        backend_->map(va, handle_bytes_, hs[done], 0);
        try {
          backend_->set_access(va, handle_bytes_, vmm::Access::kReadWrite);
        } catch (...) {
          backend_->unmap(va, handle_bytes_);
          throw;
        }
      } catch (...) {
        if (zero) map_zero(va);
        throw;
      }
    }
  } catch (...) {
    while (done > 0) {
      --done;
      const uintptr_t va = page_address(done, page.value);
      backend_->unmap(va, handle_bytes_);
      if (zero) map_zero(va);
    }
    pool_.give_back(hs);
    states_[page.value].store(PageState::kReserved, std::memory_order_release);
    throw;
  }
  count_mapped(1);
  states_[page.value].store(PageState::kMapped, std::memory_order_release);
}

void KvSpace::count_mapped(uint32_t pages) {
  const uint32_t now = mapped_pages_.fetch_add(pages, std::memory_order_relaxed) + pages;
  uint32_t peak = peak_mapped_pages_.load(std::memory_order_relaxed);
  while (now > peak &&
         !peak_mapped_pages_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}

void KvSpace::map_run(PageId first, uint32_t count) {
  if (count == 0) return;
  check_page(first);
  if (count > num_pages_ - first.value) {  // first + count - 1 could wrap past 2^32
    throw InvalidArgument("KV space: a run of " + std::to_string(count) + " pages from page " +
                          std::to_string(first.value) + " is beyond the virtual range of " +
                          std::to_string(num_pages_) + " pages");
  }
  if (count == 1 || zero_handle_.valid()) {
    uint32_t done = 0;
    try {
      for (; done < count; ++done) map_page(PageId(first.value + done));
    } catch (...) {
      while (done > 0) unmap_page(PageId(first.value + --done));
      throw;
    }
    return;
  }
  uint32_t claimed = 0;
  try {
    for (; claimed < count; ++claimed) {
      transition(PageId(first.value + claimed), PageState::kReserved, PageState::kMapping, "map");
    }
  } catch (...) {
    while (claimed > 0) {
      states_[first.value + --claimed].store(PageState::kReserved, std::memory_order_release);
    }
    throw;
  }
  auto restore_states = [&] {
    for (uint32_t i = 0; i < count; ++i) {
      states_[first.value + i].store(PageState::kReserved, std::memory_order_release);
    }
  };
  // handles_ is [page][handle]: the run's handles are one contiguous span.
  std::span<vmm::PhysicalHandle> hs(&handles_[static_cast<size_t>(first.value) * handles_per_page_],
                                    static_cast<size_t>(count) * handles_per_page_);
  try {
    pool_.acquire(hs);
  } catch (...) {
    restore_states();
    throw;
  }
  uint32_t tensors_done = 0;  // mapped and accessible
  uint32_t mapped = 0;        // handles mapped in tensor `tensors_done`
  try {
    for (; tensors_done < handles_per_page_; ++tensors_done) {
      for (mapped = 0; mapped < count; ++mapped) {
        backend_->map(page_address(tensors_done, first.value + mapped), handle_bytes_,
                      hs[static_cast<size_t>(mapped) * handles_per_page_ + tensors_done], 0);
      }
      backend_->set_access(page_address(tensors_done, first.value), handle_bytes_ * count,
                           vmm::Access::kReadWrite);
    }
  } catch (...) {
    // As map_page(): a failing undo propagates and leaves the pages "being mapped".
    auto undo = [&](uint32_t t, uint32_t n) {
      while (n > 0) backend_->unmap(page_address(t, first.value + --n), handle_bytes_);
    };
    undo(tensors_done, mapped);
    while (tensors_done > 0) undo(--tensors_done, count);
    pool_.give_back(hs);
    restore_states();
    throw;
  }
  count_mapped(count);
  for (uint32_t i = 0; i < count; ++i) {
    states_[first.value + i].store(PageState::kMapped, std::memory_order_release);
  }
}

void KvSpace::unmap_page(PageId page) {
  transition(page, PageState::kMapped, PageState::kUnmapping, "unmap");
  std::span<vmm::PhysicalHandle> hs(&handles_[static_cast<size_t>(page.value) * handles_per_page_],
                                    handles_per_page_);
  const bool zero = zero_handle_.valid();
  uint32_t done = 0;
  try {
    for (; done < handles_per_page_; ++done) {
      const uintptr_t va = page_address(done, page.value);
      backend_->unmap(va, handle_bytes_);
      if (zero) {
        try {
          map_zero(va);
        } catch (...) {
          backend_->map(va, handle_bytes_, hs[done], 0);
          backend_->set_access(va, handle_bytes_, vmm::Access::kReadWrite);
          throw;
        }
      }
    }
  } catch (...) {
    // All or nothing: put the real handles back where they were.
    while (done > 0) {
      --done;
      const uintptr_t va = page_address(done, page.value);
      if (zero) backend_->unmap(va, handle_bytes_);
      backend_->map(va, handle_bytes_, hs[done], 0);
      backend_->set_access(va, handle_bytes_, vmm::Access::kReadWrite);
    }
    states_[page.value].store(PageState::kMapped, std::memory_order_release);
    throw;
  }
  pool_.give_back(hs);
  mapped_pages_.fetch_sub(1, std::memory_order_relaxed);
  states_[page.value].store(PageState::kReserved, std::memory_order_release);
}

}  // namespace kvpager::kv
