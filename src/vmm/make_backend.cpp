#include <climits>
#include <cstdlib>

#include "kvpager/common/env_number.hpp"
#include "kvpager/common/error.hpp"
#include "kvpager/common/units.hpp"
#include "kvpager/vmm/backend.hpp"
#include "kvpager/vmm/cuda_backend.hpp"
#include "kvpager/vmm/cuda_driver.hpp"
#include "kvpager/vmm/host_backend.hpp"

namespace kvpager::vmm {

BackendChoice parse_backend_choice(const std::string& name) {
  if (name == "auto") return BackendChoice::kAuto;
  if (name == "host") return BackendChoice::kHost;
  if (name == "cuda") return BackendChoice::kCuda;
  throw InvalidArgument("unknown backend '" + name + "' (choose auto, host or cuda)");
}

BackendConfig backend_config_from_env(BackendConfig config) {
  if (const char* v = std::getenv("KVPAGER_BACKEND")) config.choice = parse_backend_choice(v);
  if (const char* v = std::getenv("KVPAGER_DEVICE")) {
    config.device =
        static_cast<int>(parse_env_number("KVPAGER_DEVICE", v, "a device number", 0, INT_MAX));
  }
  if (const char* v = std::getenv("KVPAGER_SHAREABLE_HANDLES")) {
    config.cuda_shareable_handles =
        parse_env_number("KVPAGER_SHAREABLE_HANDLES", v, "a flag", 0, 1) != 0;
  }
  if (const char* v = std::getenv("KVPAGER_HOST_GRANULARITY"))
    config.host_granularity = parse_size(v);
  if (const char* v = std::getenv("KVPAGER_HOST_CAPACITY"))
    config.host_capacity_bytes = parse_size(v);
  return config;
}

DeviceIdentity identify_device(const BackendConfig& config) {
  const bool cuda = config.choice == BackendChoice::kCuda ||
                    (config.choice == BackendChoice::kAuto && CudaDriver::device_present());
  DeviceIdentity id;
  if (!cuda) {
    id.total_bytes = config.host_capacity_bytes != 0
                         ? config.host_capacity_bytes
                         : HostBackend(HostBackendConfig{}).memory_info().total_bytes;
    return id;
  }
  const CudaDriver& driver = CudaDriver::get();
  CUdevice device = 0;
  driver.check(driver.cuDeviceGet(&device, config.device), "cuDeviceGet");
  size_t total = 0;
  driver.check(driver.cuDeviceTotalMem(&total, device), "cuDeviceTotalMem");
  id.cuda = true;
  id.device = config.device;
  id.total_bytes = total;
  return id;
}

std::shared_ptr<Backend> make_backend(const BackendConfig& config) {
  const bool cuda = config.choice == BackendChoice::kCuda ||
                    (config.choice == BackendChoice::kAuto && CudaDriver::device_present());
  if (cuda) return std::make_shared<CudaBackend>(config.device, config.cuda_shareable_handles);
  return std::make_shared<HostBackend>(
      HostBackendConfig{config.host_granularity, config.host_capacity_bytes});
}

}  // namespace kvpager::vmm
