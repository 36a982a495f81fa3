#pragma once
// The one place that talks to the CUDA driver. libcuda.so.1 is loaded lazily with dlopen, so
// the kvpager binary and the host backend run on machines without a driver. Every driver entry
// point kvpager uses is a member of CudaDriver.
#include <cuda.h>

#include <string>

namespace kvpager::vmm {

struct CudaDriver {
#define KVPAGER_CUDA_ENTRY(name) decltype(&::name) name = nullptr;
#define KVPAGER_CUDA_OPTIONAL_ENTRY(name) decltype(&::name) name = nullptr;  // may stay null
#include "kvpager/vmm/cuda_driver_entries.inc"
#undef KVPAGER_CUDA_OPTIONAL_ENTRY
#undef KVPAGER_CUDA_ENTRY

  // Loads and initialises the driver once (thread-safe). Throws DriverError when libcuda.so.1
  // is missing or cuInit fails.
  static const CudaDriver& get();

  // True when the driver loads and reports at least one device. Never throws.
  static bool device_present();

  // Throws DriverError("<call>", "<CUresult name>", context) when result != CUDA_SUCCESS;
  // CUDA_ERROR_OUT_OF_MEMORY becomes OutOfMemory.
  void check(CUresult result, const char* call, const std::string& context = {}) const;
};

}  // namespace kvpager::vmm
