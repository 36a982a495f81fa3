#include "kvpager/vmm/cuda_backend.hpp"

#include <chrono>
#include <thread>

#include "kvpager/common/error.hpp"
#include "kvpager/common/units.hpp"
#include "kvpager/vmm/cuda_driver.hpp"

namespace kvpager::vmm {

namespace {

CUmemAllocationProp allocation_prop(int device, bool shareable) {
  CUmemAllocationProp prop{};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = device;
  // Exportable as POSIX fds (to share handles across processes) only when asked.
  prop.requestedHandleTypes =
      shareable ? CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR : CU_MEM_HANDLE_TYPE_NONE;
  return prop;
}

}  // namespace

CudaBackend::CudaBackend(int device, bool shareable_handles)
    : driver_(CudaDriver::get()), ordinal_(device), shareable_(shareable_handles) {
  int count = 0;
  driver_.check(driver_.cuDeviceGetCount(&count), "cuDeviceGetCount");
  if (device < 0 || device >= count) {
    throw InvalidArgument("CUDA device " + std::to_string(device) + " does not exist (" +
                          std::to_string(count) + " present)");
  }
  CUdevice dev = 0;
  driver_.check(driver_.cuDeviceGet(&dev, device), "cuDeviceGet");
  cu_device_ = dev;
  CUcontext ctx = nullptr;
  driver_.check(driver_.cuDevicePrimaryCtxRetain(&ctx, dev), "cuDevicePrimaryCtxRetain");
  context_ = ctx;
  char name[256] = {};
  driver_.cuDeviceGetName(name, sizeof name, dev);
  name_ = name;
  make_current();
  CUmemAllocationProp prop = allocation_prop(device, shareable_);
  driver_.check(driver_.cuMemGetAllocationGranularity(&granularity_, &prop,
                                                      CU_MEM_ALLOC_GRANULARITY_RECOMMENDED),
                "cuMemGetAllocationGranularity");
}

CudaBackend::~CudaBackend() {
  if (context_ != nullptr) driver_.cuDevicePrimaryCtxRelease(cu_device_);
}

void CudaBackend::make_current() const {
  CUcontext current = nullptr;
  driver_.cuCtxGetCurrent(&current);
  if (current != static_cast<CUcontext>(context_)) {
    driver_.check(driver_.cuCtxSetCurrent(static_cast<CUcontext>(context_)), "cuCtxSetCurrent");
  }
}

std::string CudaBackend::describe() const {
  return "cuda:" + std::to_string(ordinal_) + " (" + name_ + ", granularity " +
         format_size(granularity_) + ")";
}

DeviceMemoryInfo CudaBackend::memory_info() const {
  make_current();
  size_t free_bytes = 0;
  size_t total_bytes = 0;
  driver_.check(driver_.cuMemGetInfo(&free_bytes, &total_bytes), "cuMemGetInfo");
  return {total_bytes, free_bytes};
}

PhysicalHandle CudaBackend::create(size_t bytes) {
  if (bytes == 0 || bytes % granularity_ != 0) {
    throw InvalidArgument("cuMemCreate: size " + std::to_string(bytes) +
                          " must be a positive multiple of the granularity " +
                          std::to_string(granularity_));
  }
  make_current();
  CUmemAllocationProp prop = allocation_prop(ordinal_, shareable_);
  CUmemGenericAllocationHandle handle = 0;
  driver_.check(driver_.cuMemCreate(&handle, bytes, &prop, 0), "cuMemCreate", format_size(bytes));
  return PhysicalHandle{handle, bytes};
}

void CudaBackend::release(PhysicalHandle handle) {
  if (!handle.valid()) throw InvalidArgument("cuMemRelease: invalid handle");
  driver_.check(driver_.cuMemRelease(handle.value), "cuMemRelease");
}

uintptr_t CudaBackend::reserve(size_t bytes, size_t alignment) {
  if (bytes == 0 || bytes % granularity_ != 0) {
    throw InvalidArgument(
        "cuMemAddressReserve: size must be a positive multiple of the granularity");
  }
  make_current();
  CUdeviceptr ptr = 0;
  driver_.check(driver_.cuMemAddressReserve(&ptr, bytes, std::max(alignment, granularity_), 0, 0),
                "cuMemAddressReserve", format_size(bytes));
  return static_cast<uintptr_t>(ptr);
}

void CudaBackend::free_reservation(uintptr_t va, size_t bytes) {
  make_current();
  driver_.check(driver_.cuMemAddressFree(static_cast<CUdeviceptr>(va), bytes), "cuMemAddressFree");
}

void CudaBackend::map(uintptr_t va, size_t bytes, PhysicalHandle handle, size_t offset) {
  make_current();
  driver_.check(driver_.cuMemMap(static_cast<CUdeviceptr>(va), bytes, offset, handle.value, 0),
                "cuMemMap");
}

void CudaBackend::set_access(uintptr_t va, size_t bytes, Access access) {
  make_current();
  CUmemAccessDesc desc{};
  desc.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  desc.location.id = ordinal_;
  desc.flags = access == Access::kReadWrite  ? CU_MEM_ACCESS_FLAGS_PROT_READWRITE
               : access == Access::kReadOnly ? CU_MEM_ACCESS_FLAGS_PROT_READ
                                             : CU_MEM_ACCESS_FLAGS_PROT_NONE;
  driver_.check(driver_.cuMemSetAccess(static_cast<CUdeviceptr>(va), bytes, &desc, 1),
                "cuMemSetAccess");
}

void CudaBackend::unmap(uintptr_t va, size_t bytes) {
  make_current();
  driver_.check(driver_.cuMemUnmap(static_cast<CUdeviceptr>(va), bytes), "cuMemUnmap");
}

void CudaBackend::zero_fill(uintptr_t va, size_t bytes) {
  make_current();
  driver_.check(driver_.cuMemsetD8(static_cast<CUdeviceptr>(va), 0, bytes), "cuMemsetD8");
  driver_.check(driver_.cuCtxSynchronize(), "cuCtxSynchronize", "after zero fill");
}

void CudaBackend::prepare_background_thread() {
  // Thread-local, not relaxed: this thread's own captures (it makes none) would stay checked.
  CUstreamCaptureMode mode = CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
  driver_.check(driver_.cuThreadExchangeStreamCaptureMode(&mode),
                "cuThreadExchangeStreamCaptureMode", "preparing a kvpager background thread");
}

void CudaBackend::wait_for_stream(uintptr_t stream) {
  make_current();
  // An event recorded into a stream that another thread is capturing into a CUDA graph would
  // join the capture (and could not be waited for). Engines capture one forward pass at a time
  // (milliseconds), so wait for the capture to end first. (vLLM captures on a stream of its
  // own, not this one; what its global-mode capture forbids other threads is lifted by
  // prepare_background_thread.)
  const auto handle = reinterpret_cast<CUstream>(stream);
  for (;;) {
    CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_NONE;
    driver_.check(driver_.cuStreamIsCapturing(handle, &status), "cuStreamIsCapturing",
                  "waiting for the stream before unmap");
    if (status == CU_STREAM_CAPTURE_STATUS_NONE) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  CUevent event = nullptr;
  driver_.check(driver_.cuEventCreate(&event, CU_EVENT_DISABLE_TIMING), "cuEventCreate");
  CUresult rc = driver_.cuEventRecord(event, handle);
  if (rc == CUDA_SUCCESS) rc = driver_.cuEventSynchronize(event);
  driver_.cuEventDestroy(event);
  driver_.check(rc, "cuEventRecord/cuEventSynchronize", "waiting for the stream before unmap");
}

}  // namespace kvpager::vmm
