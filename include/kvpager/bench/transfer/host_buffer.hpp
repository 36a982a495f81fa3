#pragma once
// Page-aligned host memory for transfer buffers (anonymous mmap, populated up front so the
// first timed pass does not take page faults; suitable for O_DIRECT and
// for UCX registration), with the Segment helpers. Owns the mapping; move-only.
#include <cstddef>
#include <cstdint>

#include "kvpager/bench/transfer/segment.hpp"

namespace kvpager::transfer {

class HostBuffer final : public Segment {
 public:
  explicit HostBuffer(uint64_t bytes);  // throws OutOfMemory / DriverError(mmap)
  ~HostBuffer() override;
  HostBuffer(HostBuffer&& other) noexcept;
  HostBuffer& operator=(HostBuffer&&) = delete;
  HostBuffer(const HostBuffer&) = delete;

  std::byte* data() const { return data_; }
  uint64_t size() const override { return size_; }
  void fill(uint64_t offset, uint64_t bytes, uint64_t pattern_offset, uint64_t seed) override;
  void clear(uint64_t offset, uint64_t bytes) override;
  uint64_t mismatches(uint64_t offset, uint64_t bytes, uint64_t pattern_offset,
                      uint64_t seed) override;

 private:
  std::byte* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace kvpager::transfer
