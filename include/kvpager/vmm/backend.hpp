#pragma once
// The virtual-memory backend interface: the only layer that talks to the CUDA driver or to the
// kernel's mmap. Everything above (pool, kv, tp) is written against this interface and is tested
// in CI on HostBackend, which has the same semantics as CudaBackend on ordinary RAM.
//
// Semantics (both backends):
//  - create(bytes): a physical handle of `bytes` (a multiple of granularity()). Throws
//    OutOfMemory when the device has no room; DriverError for anything else.
//  - reserve(bytes, alignment): a range of virtual addresses with no memory behind it.
//  - map(va, bytes, handle, offset): puts `bytes` of the handle (from `offset`) at va. va, bytes
//    and offset are multiples of granularity(); the range must lie in a reservation and must not
//    be mapped already (InvalidArgument). A mapped range is not accessible until set_access().
//  - set_access(va, bytes, access): makes a mapped range readable/writable (or read-only).
//  - unmap(va, bytes): removes the mapping; the range returns to "reserved". Physical memory
//    stays with its handle until release().
//  - release(handle): frees the physical memory once no mapping refers to it.
// Thread safety: all methods may be called concurrently from several threads.
// Errors never leave the backend in a half-done state for a single call.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace kvpager::vmm {

enum class BackendKind { kHost, kCuda };

enum class Access { kNone, kReadOnly, kReadWrite };

// Opaque physical allocation: a CUmemGenericAllocationHandle or a memfd.
struct PhysicalHandle {
  uint64_t value = 0;
  size_t bytes = 0;
  bool valid() const { return bytes != 0; }
};

struct DeviceMemoryInfo {
  uint64_t total_bytes = 0;
  uint64_t free_bytes = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual BackendKind kind() const = 0;
  virtual std::string describe() const = 0;  // e.g. "cuda:0 (NVIDIA H100 80GB HBM3)"
  virtual int device() const = 0;            // device ordinal (0 for the host backend)
  virtual size_t granularity() const = 0;
  virtual DeviceMemoryInfo memory_info() const = 0;

  virtual PhysicalHandle create(size_t bytes) = 0;
  virtual void release(PhysicalHandle handle) = 0;

  virtual uintptr_t reserve(size_t bytes, size_t alignment) = 0;
  virtual void free_reservation(uintptr_t va, size_t bytes) = 0;

  virtual void map(uintptr_t va, size_t bytes, PhysicalHandle handle, size_t offset) = 0;
  virtual void set_access(uintptr_t va, size_t bytes, Access access) = 0;
  virtual void unmap(uintptr_t va, size_t bytes) = 0;

  // Fills `bytes` at va (mapped, writable) with zeros. Used once for the shared zero page.
  virtual void zero_fill(uintptr_t va, size_t bytes) = 0;

  // Blocks until all work queued so far on `stream` (a CUstream; 0 = legacy default stream)
  // has completed, by recording an event and waiting on it. Never synchronises the whole
  // device. No-op on the host backend.
  virtual void wait_for_stream(uintptr_t stream) = 0;

  // Called once, first, by each thread kvpager starts that calls this backend (the pool's
  // refill thread, the KV mapper, a tp rank server); never on an engine's own threads. Those
  // threads never capture CUDA graphs, so CudaBackend sets their capture mode to thread-local:
  // a graph an engine captures on another thread in CUDA's global mode (PyTorch's and vLLM's
  // default) then neither refuses their driver calls (map, unmap, event waits) nor is
  // invalidated by them. No-op on the host backend. Errors: DriverError.
  virtual void prepare_background_thread() = 0;
};

// Which backend `make_backend` builds.
enum class BackendChoice { kAuto, kHost, kCuda };

struct BackendConfig {
  BackendChoice choice = BackendChoice::kAuto;  // KVPAGER_BACKEND=auto|host|cuda
  int device = 0;                               // KVPAGER_DEVICE
  bool cuda_shareable_handles = false;          // KVPAGER_SHAREABLE_HANDLES=1
  // Host backend only: granularity and the capacity that stands in for device memory
  // (0 = physical RAM). KVPAGER_HOST_GRANULARITY, KVPAGER_HOST_CAPACITY.
  size_t host_granularity = 2u << 20;
  uint64_t host_capacity_bytes = 0;
};

// Fills the fields from KVPAGER_* environment variables (unset ones keep their value).
// Throws InvalidArgument naming the variable for a malformed value.
BackendConfig backend_config_from_env(BackendConfig defaults = BackendConfig{});

BackendChoice parse_backend_choice(const std::string& name);  // "auto", "host", "cuda"

// Builds the chosen backend. kAuto picks CUDA when a device is present, else host.
// Throws DriverError for kCuda on a machine without a usable device.
std::shared_ptr<Backend> make_backend(const BackendConfig& config);

// The device `make_backend(config)` would use, without building it (no CUDA context, no
// memory): "cuda<N>" or "host0", and its total memory. For a process that accounts for memory
// other processes map (a tensor-parallel scheduler). DriverError as make_backend.
struct DeviceIdentity {
  bool cuda = false;
  int device = 0;
  uint64_t total_bytes = 0;
  std::string name() const { return (cuda ? "cuda" : "host") + std::to_string(device); }
};
DeviceIdentity identify_device(const BackendConfig& config);

}  // namespace kvpager::vmm
