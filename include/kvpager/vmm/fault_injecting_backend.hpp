#pragma once
// FaultInjectingBackend: wraps a Backend and makes a chosen call fail, to test that every
// layer above rolls back a failed multi-step operation. Arm it with fail_on(op, n): the n-th
// call (1-based, counted from arming) of `op` throws `kind` instead of reaching the real
// backend. Thread-safe.
#include <atomic>
#include <memory>

#include "kvpager/vmm/backend.hpp"

namespace kvpager::vmm {

enum class BackendOp { kCreate, kRelease, kReserve, kFreeReservation, kMap, kSetAccess, kUnmap };
enum class InjectedError { kDriverError, kOutOfMemory };

class FaultInjectingBackend final : public Backend {
 public:
  explicit FaultInjectingBackend(std::shared_ptr<Backend> inner);

  void fail_on(BackendOp op, int nth_call, InjectedError kind = InjectedError::kDriverError);
  void disarm();
  // Calls of `op` since construction (counting the failed one).
  int calls(BackendOp op) const;

  BackendKind kind() const override { return inner_->kind(); }
  std::string describe() const override { return "fault-injecting " + inner_->describe(); }
  int device() const override { return inner_->device(); }
  size_t granularity() const override { return inner_->granularity(); }
  DeviceMemoryInfo memory_info() const override { return inner_->memory_info(); }
  PhysicalHandle create(size_t bytes) override;
  void release(PhysicalHandle handle) override;
  uintptr_t reserve(size_t bytes, size_t alignment) override;
  void free_reservation(uintptr_t va, size_t bytes) override;
  void map(uintptr_t va, size_t bytes, PhysicalHandle handle, size_t offset) override;
  void set_access(uintptr_t va, size_t bytes, Access access) override;
  void unmap(uintptr_t va, size_t bytes) override;
  void zero_fill(uintptr_t va, size_t bytes) override { inner_->zero_fill(va, bytes); }
  void wait_for_stream(uintptr_t stream) override { inner_->wait_for_stream(stream); }
  void prepare_background_thread() override { inner_->prepare_background_thread(); }

 private:
  void before(BackendOp op);

  static constexpr int kOps = 7;
  std::shared_ptr<Backend> inner_;
  std::atomic<int> armed_op_{-1};
  std::atomic<int> remaining_{0};
  std::atomic<InjectedError> error_kind_{InjectedError::kDriverError};
  std::atomic<int> counts_[kOps] = {};
};

}  // namespace kvpager::vmm
