#include "kvpager/vmm/cuda_driver.hpp"

#include <dlfcn.h>

#include <mutex>

#include "kvpager/common/error.hpp"

#define KVPAGER_STR_INNER(x) #x
#define KVPAGER_XSTR(x) KVPAGER_STR_INNER(x)

namespace kvpager::vmm {

namespace {

struct LoadResult {
  CudaDriver driver;
  std::string error;  // empty on success
};

LoadResult load_driver() {
  LoadResult out;
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* why = dlerror();
    out.error = std::string("dlopen(libcuda.so.1): ") + (why ? why : "not found") +
                " - no NVIDIA driver on this machine; use the host backend (--backend host)";
    return out;
  }
  CudaDriver& d = out.driver;
#define KVPAGER_CUDA_ENTRY(name)                                               \
  d.name = reinterpret_cast<decltype(d.name)>(dlsym(lib, KVPAGER_XSTR(name))); \
  if (d.name == nullptr) {                                                     \
    out.error = std::string("libcuda.so.1 lacks ") + KVPAGER_XSTR(name) +      \
                " - the driver is older than the CUDA 12 API kvpager needs";   \
    return out;                                                                \
  }
#define KVPAGER_CUDA_OPTIONAL_ENTRY(name) \
  d.name = reinterpret_cast<decltype(d.name)>(dlsym(lib, KVPAGER_XSTR(name)));
#include "kvpager/vmm/cuda_driver_entries.inc"
#undef KVPAGER_CUDA_OPTIONAL_ENTRY
#undef KVPAGER_CUDA_ENTRY
  const CUresult rc = d.cuInit(0);
  if (rc != CUDA_SUCCESS) {
    const char* name = nullptr;
    d.cuGetErrorName(rc, &name);
    out.error = std::string("cuInit failed: ") + (name ? name : "unknown CUresult");
  }
  return out;
}

const LoadResult& loaded() {
  static const LoadResult result = load_driver();  // thread-safe static init
  return result;
}

}  // namespace

const CudaDriver& CudaDriver::get() {
  const LoadResult& r = loaded();
  if (!r.error.empty()) throw DriverError("load CUDA driver", r.error);
  return r.driver;
}

bool CudaDriver::device_present() {
  const LoadResult& r = loaded();
  if (!r.error.empty()) return false;
  int count = 0;
  return r.driver.cuDeviceGetCount(&count) == CUDA_SUCCESS && count > 0;
}

void CudaDriver::check(CUresult result, const char* call, const std::string& context) const {
  if (result == CUDA_SUCCESS) return;
  const char* name = nullptr;
  const char* text = nullptr;
  cuGetErrorName(result, &name);
  cuGetErrorString(result, &text);
  std::string what = std::string(name ? name : "CUresult ") + (name ? "" : std::to_string(result));
  if (text) what += std::string(" - ") + text;
  if (result == CUDA_ERROR_OUT_OF_MEMORY) {
    throw OutOfMemory(std::string(call) + " failed: " + what +
                      (context.empty() ? "" : " (" + context + ")"));
  }
  throw DriverError(call, what, context);
}

}  // namespace kvpager::vmm
