#include "kvpager/vmm/fault_injecting_backend.hpp"

#include "kvpager/common/error.hpp"

namespace kvpager::vmm {

namespace {
const char* op_name(BackendOp op) {
  static const char* names[] = {"create", "release",    "reserve", "free_reservation",
                                "map",    "set_access", "unmap"};
  return names[static_cast<int>(op)];
}
}  // namespace

FaultInjectingBackend::FaultInjectingBackend(std::shared_ptr<Backend> inner)
    : inner_(std::move(inner)) {}

void FaultInjectingBackend::fail_on(BackendOp op, int nth_call, InjectedError kind) {
  error_kind_ = kind;
  remaining_ = nth_call;
  armed_op_ = static_cast<int>(op);
}

void FaultInjectingBackend::disarm() {
  armed_op_ = -1;
}

int FaultInjectingBackend::calls(BackendOp op) const {
  return counts_[static_cast<int>(op)];
}

void FaultInjectingBackend::before(BackendOp op) {
  counts_[static_cast<int>(op)]++;
  if (armed_op_.load() != static_cast<int>(op)) return;
  if (--remaining_ != 0) return;
  armed_op_ = -1;
  if (error_kind_ == InjectedError::kOutOfMemory) {
    throw OutOfMemory(std::string("injected out-of-memory in ") + op_name(op));
  }
  throw DriverError(op_name(op), "injected failure");
}

PhysicalHandle FaultInjectingBackend::create(size_t bytes) {
  before(BackendOp::kCreate);
  return inner_->create(bytes);
}
void FaultInjectingBackend::release(PhysicalHandle handle) {
  before(BackendOp::kRelease);
  inner_->release(handle);
}
uintptr_t FaultInjectingBackend::reserve(size_t bytes, size_t alignment) {
  before(BackendOp::kReserve);
  return inner_->reserve(bytes, alignment);
}
void FaultInjectingBackend::free_reservation(uintptr_t va, size_t bytes) {
  before(BackendOp::kFreeReservation);
  inner_->free_reservation(va, bytes);
}
void FaultInjectingBackend::map(uintptr_t va, size_t bytes, PhysicalHandle handle, size_t offset) {
  before(BackendOp::kMap);
  inner_->map(va, bytes, handle, offset);
}
void FaultInjectingBackend::set_access(uintptr_t va, size_t bytes, Access access) {
  before(BackendOp::kSetAccess);
  inner_->set_access(va, bytes, access);
}
void FaultInjectingBackend::unmap(uintptr_t va, size_t bytes) {
  before(BackendOp::kUnmap);
  inner_->unmap(va, bytes);
}

}  // namespace kvpager::vmm
