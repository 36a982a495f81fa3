#pragma once
// The gather/scatter copy kernel (copy_kernel.cu) as the CUDA engine uses it (internal to the
// transfer engine): the fatbin embedded at build time, loaded into the context current on the
// constructing thread with cuModuleLoadData. Owns the module (unloaded in the destructor, with
// the same context current). launch() is thread-safe (a CUfunction may be launched from any
// thread whose current context is the module's); it allocates nothing.
#include <cuda.h>

#include <cstdint>

#include "kvpager/vmm/cuda_driver.hpp"

namespace kvpager::transfer::detail {

class CopyKernel {
 public:
  // False when kvpager was built without nvcc (no embedded kernel).
  static bool built();

  // Loads the module into the current context, for `device` (its SM count sizes the grid).
  // Throws InvalidArgument when !built(), DriverError when the driver refuses the module
  // (e.g. a GPU older than the architectures compiled in).
  CopyKernel(const vmm::CudaDriver& driver, CUdevice device);
  ~CopyKernel();
  CopyKernel(const CopyKernel&) = delete;
  CopyKernel& operator=(const CopyKernel&) = delete;

  // Enqueues one launch on `stream` copying `count` CopyPieces stored at `pieces` (device
  // memory). No-op for count == 0. Throws DriverError when the launch is refused.
  void launch(CUstream stream, CUdeviceptr pieces, uint64_t count) const;

  int multiprocessors() const { return sms_; }

 private:
  const vmm::CudaDriver& d_;
  CUcontext context_ = nullptr;  // the module's (made current to unload it)
  CUmodule module_ = nullptr;
  CUfunction function_ = nullptr;
  int sms_ = 1;
};

}  // namespace kvpager::transfer::detail
