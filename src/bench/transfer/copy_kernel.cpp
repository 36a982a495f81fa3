#include "copy_kernel.hpp"

#include <cstddef>

#include "kvpager/bench/transfer/copy_plan.hpp"
#include "kvpager/common/error.hpp"

namespace kvpager::transfer::detail {

#if KVPAGER_TRANSFER_HAVE_COPY_KERNEL
extern const unsigned char copy_kernel_fatbin[];  // copy_kernel_fatbin.cpp (generated)
extern const std::size_t copy_kernel_fatbin_size;
bool CopyKernel::built() {
  return copy_kernel_fatbin_size > 0;
}
#else
namespace {
const unsigned char* const copy_kernel_fatbin = nullptr;
}
bool CopyKernel::built() {
  return false;
}
#endif

CopyKernel::CopyKernel(const vmm::CudaDriver& d, CUdevice device) : d_(d) {
  if (!built()) {
    throw InvalidArgument("the copy kernel was not compiled into this kvpager (no nvcc)");
  }
  d_.check(d_.cuDeviceGetAttribute(&sms_, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, device),
           "cuDeviceGetAttribute", "multiprocessor count");
  d_.check(d_.cuCtxGetCurrent(&context_), "cuCtxGetCurrent");
  d_.check(d_.cuModuleLoadData(&module_, copy_kernel_fatbin), "cuModuleLoadData",
           "kvpager's copy kernel (built for CMAKE_CUDA_ARCHITECTURES; rebuild for this GPU)");
  const CUresult rc = d_.cuModuleGetFunction(&function_, module_, "kvpager_copy_pieces");
  if (rc != CUDA_SUCCESS) {
    d_.cuModuleUnload(module_);
    d_.check(rc, "cuModuleGetFunction", "kvpager_copy_pieces");
  }
}

CopyKernel::~CopyKernel() {
  d_.cuCtxSetCurrent(context_);
  d_.cuModuleUnload(module_);
}

void CopyKernel::launch(CUstream stream, CUdeviceptr pieces, uint64_t count) const {
  if (count == 0) return;
  unsigned long long n = count;
  void* args[] = {&pieces, &n};
  d_.check(d_.cuLaunchKernel(function_, copy_kernel_ctas(count, sms_), 1, 1, kCopyThreads, 1, 1, 0,
                             stream, args, nullptr),
           "cuLaunchKernel", "kvpager_copy_pieces");
}

}  // namespace kvpager::transfer::detail
