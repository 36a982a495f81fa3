#include "kvpager/bench/transfer/host_buffer.hpp"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "kvpager/bench/transfer/xfer_layout.hpp"
#include "kvpager/common/error.hpp"
#include "kvpager/common/units.hpp"

namespace kvpager::transfer {

HostBuffer::HostBuffer(uint64_t bytes) : size_(bytes) {
  if (bytes == 0) throw InvalidArgument("HostBuffer: zero bytes");
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (p == MAP_FAILED) {
    if (errno == ENOMEM) {
      throw OutOfMemory("cannot map a " + format_size(bytes) +
                        " transfer buffer; lower --total_buffer_size");
    }
    throw_errno("mmap", errno, format_size(bytes) + " transfer buffer");
  }
  data_ = static_cast<std::byte*>(p);
}

HostBuffer::~HostBuffer() {
  if (data_ != nullptr) ::munmap(data_, size_);
}

HostBuffer::HostBuffer(HostBuffer&& other) noexcept : data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

void HostBuffer::fill(uint64_t offset, uint64_t bytes, uint64_t pattern_offset, uint64_t seed) {
  fill_pattern(data_ + offset, bytes, pattern_offset, seed);
}

void HostBuffer::clear(uint64_t offset, uint64_t bytes) {
  std::memset(data_ + offset, 0, bytes);
}

uint64_t HostBuffer::mismatches(uint64_t offset, uint64_t bytes, uint64_t pattern_offset,
                                uint64_t seed) {
  return count_mismatches(data_ + offset, bytes, pattern_offset, seed);
}

}  // namespace kvpager::transfer
