#pragma once
// HostBackend: the VMM semantics of CudaBackend on ordinary RAM.
// Physical handles are memfds; reservations are PROT_NONE anonymous mappings; map() puts the
// memfd at the address with mmap(MAP_FIXED|MAP_SHARED) and PROT_NONE, set_access() mprotects,
// unmap() puts a PROT_NONE anonymous mapping back, release() closes the memfd (memory is freed
// once unmapped). The backend tracks reservations and mappings so misuse (mapping outside a
// reservation, mapping twice, unmapping what is not mapped) raises InvalidArgument exactly as the
// CUDA driver would refuse it. Thread-safe.
#include <map>
#include <mutex>

#include "kvpager/vmm/backend.hpp"

namespace kvpager::vmm {

struct HostBackendConfig {
  size_t granularity = 2u << 20;  // multiple of the OS page size
  uint64_t capacity_bytes = 0;    // sum of live handles allowed; 0 = physical RAM
};

class HostBackend final : public Backend {
 public:
  explicit HostBackend(HostBackendConfig config = {});
  ~HostBackend() override;
  HostBackend(const HostBackend&) = delete;
  HostBackend& operator=(const HostBackend&) = delete;

  BackendKind kind() const override { return BackendKind::kHost; }
  std::string describe() const override;
  int device() const override { return 0; }
  size_t granularity() const override { return config_.granularity; }
  DeviceMemoryInfo memory_info() const override;

  PhysicalHandle create(size_t bytes) override;
  void release(PhysicalHandle handle) override;
  uintptr_t reserve(size_t bytes, size_t alignment) override;
  void free_reservation(uintptr_t va, size_t bytes) override;
  void map(uintptr_t va, size_t bytes, PhysicalHandle handle, size_t offset) override;
  void set_access(uintptr_t va, size_t bytes, Access access) override;
  void unmap(uintptr_t va, size_t bytes) override;
  void zero_fill(uintptr_t va, size_t bytes) override;
  void wait_for_stream(uintptr_t) override {}
  void prepare_background_thread() override {}

 private:
  void check_aligned(const char* call, uint64_t value, const char* what) const;

  HostBackendConfig config_;
  mutable std::mutex mutex_;
  uint64_t live_bytes_ = 0;
  std::map<uintptr_t, size_t> reservations_;  // start -> length
  std::map<uintptr_t, size_t> mappings_;      // start -> length
};

}  // namespace kvpager::vmm
