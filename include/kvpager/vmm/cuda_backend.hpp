#pragma once
// CudaBackend: the CUDA driver's virtual memory management API (cuMemCreate, cuMemMap,
// cuMemSetAccess, ...) for one device. Uses the device's primary context, made current on the
// calling thread for each call, so any thread may use the backend. Thread-safe.
// Errors: OutOfMemory for CUDA_ERROR_OUT_OF_MEMORY, DriverError naming the call and CUresult
// otherwise; a backend is only constructible where a device exists (DriverError otherwise).
#include "kvpager/vmm/backend.hpp"

namespace kvpager::vmm {

struct CudaDriver;

class CudaBackend final : public Backend {
 public:
  // shareable_handles: physical handles can be exported as POSIX fds (cuMemExportToShareableHandle)
  // for other processes; off by default since it makes set-access and unmap slower on some
  // drivers (docs/benchmarks.md).
  explicit CudaBackend(int device = 0, bool shareable_handles = false);
  bool shareable_handles() const { return shareable_; }
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  BackendKind kind() const override { return BackendKind::kCuda; }
  std::string describe() const override;
  int device() const override { return ordinal_; }
  size_t granularity() const override { return granularity_; }
  DeviceMemoryInfo memory_info() const override;

  PhysicalHandle create(size_t bytes) override;
  void release(PhysicalHandle handle) override;
  uintptr_t reserve(size_t bytes, size_t alignment) override;
  void free_reservation(uintptr_t va, size_t bytes) override;
  void map(uintptr_t va, size_t bytes, PhysicalHandle handle, size_t offset) override;
  void set_access(uintptr_t va, size_t bytes, Access access) override;
  void unmap(uintptr_t va, size_t bytes) override;
  void zero_fill(uintptr_t va, size_t bytes) override;
  void wait_for_stream(uintptr_t stream) override;
  void prepare_background_thread() override;

  // Makes this device's primary context current on the calling thread (cheap when it already
  // is). Public so callers launching kernels on kvpager memory can share the context.
  void make_current() const;

 private:
  const CudaDriver& driver_;
  int ordinal_;
  bool shareable_;
  int cu_device_ = 0;
  void* context_ = nullptr;  // CUcontext
  size_t granularity_ = 0;
  std::string name_;
};

}  // namespace kvpager::vmm
