#pragma once
// DelegatingBackend: a test backend that forwards every call to an inner backend and runs
// before_call() first, so a test backend overrides only what it changes (a gate, a check).
// Thread safety: as the inner backend; before_call() must be thread-safe.
#include <memory>
#include <string>

#include "kvpager/vmm/backend.hpp"

namespace kvpager::testing {

class DelegatingBackend : public vmm::Backend {
 public:
  explicit DelegatingBackend(std::shared_ptr<vmm::Backend> inner) : inner_(std::move(inner)) {}

  vmm::BackendKind kind() const override { return inner_->kind(); }
  std::string describe() const override { return "test " + inner_->describe(); }
  int device() const override { return inner_->device(); }
  size_t granularity() const override { return inner_->granularity(); }
  vmm::DeviceMemoryInfo memory_info() const override { return inner_->memory_info(); }
  vmm::PhysicalHandle create(size_t bytes) override {
    before_call();
    return inner_->create(bytes);
  }
  void release(vmm::PhysicalHandle handle) override {
    before_call();
    inner_->release(handle);
  }
  uintptr_t reserve(size_t bytes, size_t alignment) override {
    before_call();
    return inner_->reserve(bytes, alignment);
  }
  void free_reservation(uintptr_t va, size_t bytes) override {
    before_call();
    inner_->free_reservation(va, bytes);
  }
  void map(uintptr_t va, size_t bytes, vmm::PhysicalHandle handle, size_t offset) override {
    before_call();
    inner_->map(va, bytes, handle, offset);
  }
  void set_access(uintptr_t va, size_t bytes, vmm::Access access) override {
    before_call();
    inner_->set_access(va, bytes, access);
  }
  void unmap(uintptr_t va, size_t bytes) override {
    before_call();
    inner_->unmap(va, bytes);
  }
  void zero_fill(uintptr_t va, size_t bytes) override {
    before_call();
    inner_->zero_fill(va, bytes);
  }
  void wait_for_stream(uintptr_t stream) override {
    before_call();
    inner_->wait_for_stream(stream);
  }
  void prepare_background_thread() override { inner_->prepare_background_thread(); }

 protected:
  // Runs first in every call that reaches the device (not in the const queries).
  virtual void before_call() {}

 private:
  std::shared_ptr<vmm::Backend> inner_;
};

}  // namespace kvpager::testing
