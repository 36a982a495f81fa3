#include "kvpager/vmm/host_backend.hpp"

#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>

#include "kvpager/common/error.hpp"
#include "kvpager/common/units.hpp"

namespace kvpager::vmm {

namespace {

uint64_t physical_ram_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGESIZE);
  return static_cast<uint64_t>(pages) * static_cast<uint64_t>(page_size);
}

// Each handle is one memfd: lift the soft descriptor limit to the hard one once.
void raise_fd_limit() {
  static std::once_flag once;
  std::call_once(once, [] {
    rlimit lim{};
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
      lim.rlim_cur = lim.rlim_max;
      setrlimit(RLIMIT_NOFILE, &lim);
    }
  });
}

// True when [va, va+bytes) overlaps an entry of `ranges`.
bool overlaps(const std::map<uintptr_t, size_t>& ranges, uintptr_t va, size_t bytes) {
  auto it = ranges.upper_bound(va);
  if (it != ranges.begin()) {
    auto prev = std::prev(it);
    if (prev->first + prev->second > va) return true;
  }
  return it != ranges.end() && it->first < va + bytes;
}

// True when [va, va+bytes) lies inside one entry of `ranges`.
bool contained(const std::map<uintptr_t, size_t>& ranges, uintptr_t va, size_t bytes) {
  auto it = ranges.upper_bound(va);
  if (it == ranges.begin()) return false;
  --it;
  return it->first <= va && va + bytes <= it->first + it->second;
}

}  // namespace

HostBackend::HostBackend(HostBackendConfig config) : config_(config) {
  const auto page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  if (config_.granularity == 0 || config_.granularity % page != 0) {
    throw InvalidArgument("host backend granularity " + std::to_string(config_.granularity) +
                          " must be a positive multiple of the OS page size " +
                          std::to_string(page));
  }
  if (config_.capacity_bytes == 0) config_.capacity_bytes = physical_ram_bytes();
  raise_fd_limit();
}

HostBackend::~HostBackend() = default;

std::string HostBackend::describe() const {
  return "host (memfd, granularity " + format_size(config_.granularity) + ", capacity " +
         format_size(config_.capacity_bytes) + ")";
}

DeviceMemoryInfo HostBackend::memory_info() const {
  std::lock_guard lock(mutex_);
  return {config_.capacity_bytes, config_.capacity_bytes - live_bytes_};
}

void HostBackend::check_aligned(const char* call, uint64_t value, const char* what) const {
  if (value % config_.granularity != 0) {
    throw InvalidArgument(std::string(call) + ": " + what + " " + std::to_string(value) +
                          " is not a multiple of the granularity " +
                          std::to_string(config_.granularity));
  }
}

PhysicalHandle HostBackend::create(size_t bytes) {
  if (bytes == 0) throw InvalidArgument("create: size must be positive");
  check_aligned("create", bytes, "size");
  {
    std::lock_guard lock(mutex_);
    if (live_bytes_ + bytes > config_.capacity_bytes) {
      throw OutOfMemory("create: " + format_size(bytes) +
                        " does not fit: " + format_size(live_bytes_) + " of " +
                        format_size(config_.capacity_bytes) + " host backend capacity in use");
    }
    live_bytes_ += bytes;
  }
  const int fd = memfd_create("kvpager-page", MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    const int err = errno;
    if (fd >= 0) close(fd);
    std::lock_guard lock(mutex_);
    live_bytes_ -= bytes;
    throw_errno(fd < 0 ? "memfd_create" : "ftruncate", err);
  }
  return PhysicalHandle{static_cast<uint64_t>(fd), bytes};
}

void HostBackend::release(PhysicalHandle handle) {
  if (!handle.valid()) throw InvalidArgument("release: invalid handle");
  if (close(static_cast<int>(handle.value)) != 0) throw_errno("close", errno, "release");
  std::lock_guard lock(mutex_);
  live_bytes_ -= handle.bytes;
}

uintptr_t HostBackend::reserve(size_t bytes, size_t alignment) {
  if (bytes == 0) throw InvalidArgument("reserve: size must be positive");
  check_aligned("reserve", bytes, "size");
  if (alignment & (alignment - 1)) {  // as cuMemAddressReserve: CUDA_ERROR_INVALID_VALUE
    throw InvalidArgument("reserve: alignment " + std::to_string(alignment) +
                          " is not a power of two");
  }
  if (alignment < config_.granularity) alignment = config_.granularity;
  const size_t span = bytes + alignment;
  void* raw = mmap(nullptr, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (raw == MAP_FAILED) throw_errno("mmap", errno, "reserve " + format_size(bytes));
  const auto base = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (base + alignment - 1) / alignment * alignment;
  if (aligned > base) munmap(raw, aligned - base);
  const uintptr_t end = aligned + bytes;
  if (base + span > end) munmap(reinterpret_cast<void*>(end), base + span - end);
  std::lock_guard lock(mutex_);
  reservations_[aligned] = bytes;
  return aligned;
}

void HostBackend::free_reservation(uintptr_t va, size_t bytes) {
  {
    std::lock_guard lock(mutex_);
    auto it = reservations_.find(va);
    if (it == reservations_.end() || it->second != bytes) {
      throw InvalidArgument("free_reservation: no reservation of that size at that address");
    }
    if (overlaps(mappings_, va, bytes)) {
      throw InvalidArgument("free_reservation: the range still has mappings; unmap them first");
    }
    reservations_.erase(it);
  }
  if (munmap(reinterpret_cast<void*>(va), bytes) != 0) throw_errno("munmap", errno);
}

void HostBackend::map(uintptr_t va, size_t bytes, PhysicalHandle handle, size_t offset) {
  if (!handle.valid()) throw InvalidArgument("map: invalid handle");
  check_aligned("map", va, "address");
  check_aligned("map", bytes, "size");
  check_aligned("map", offset, "offset");
  if (bytes == 0 || offset + bytes > handle.bytes) {
    throw InvalidArgument("map: range exceeds the physical handle");
  }
  std::lock_guard lock(mutex_);
  if (!contained(reservations_, va, bytes)) {
    throw InvalidArgument("map: range is not inside a reservation");
  }
  if (overlaps(mappings_, va, bytes)) throw InvalidArgument("map: range is already mapped");
  void* r = mmap(reinterpret_cast<void*>(va), bytes, PROT_NONE, MAP_SHARED | MAP_FIXED,
                 static_cast<int>(handle.value), static_cast<off_t>(offset));
  if (r == MAP_FAILED) throw_errno("mmap", errno, "map");
  mappings_[va] = bytes;
}

void HostBackend::set_access(uintptr_t va, size_t bytes, Access access) {
  check_aligned("set_access", va, "address");
  check_aligned("set_access", bytes, "size");
  const int prot = access == Access::kReadWrite  ? PROT_READ | PROT_WRITE
                   : access == Access::kReadOnly ? PROT_READ
                                                 : PROT_NONE;
  {
    std::lock_guard lock(mutex_);
    // Every byte must be mapped: walk the mappings that cover the range.
    uintptr_t cursor = va;
    auto it = mappings_.upper_bound(va);
    if (it != mappings_.begin()) --it;
    while (cursor < va + bytes && it != mappings_.end() && it->first <= cursor) {
      cursor = std::max(cursor, it->first + it->second);
      ++it;
    }
    if (cursor < va + bytes) throw InvalidArgument("set_access: range is not fully mapped");
  }
  if (mprotect(reinterpret_cast<void*>(va), bytes, prot) != 0) throw_errno("mprotect", errno);
}

void HostBackend::unmap(uintptr_t va, size_t bytes) {
  check_aligned("unmap", va, "address");
  check_aligned("unmap", bytes, "size");
  std::lock_guard lock(mutex_);
  auto it = mappings_.find(va);
  if (it == mappings_.end() || it->second != bytes) {
    throw InvalidArgument("unmap: no mapping of that size at that address");
  }
  void* r = mmap(reinterpret_cast<void*>(va), bytes, PROT_NONE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
  if (r == MAP_FAILED) throw_errno("mmap", errno, "unmap");
  mappings_.erase(it);
}

void HostBackend::zero_fill(uintptr_t va, size_t bytes) {
  std::memset(reinterpret_cast<void*>(va), 0, bytes);
}

}  // namespace kvpager::vmm
