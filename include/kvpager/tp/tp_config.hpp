#pragma once
// Configuration of the tensor-parallel layer, one struct per component: TpConfig for the
// scheduler, WorkerConfig for what each worker process builds. The scheduler hands a worker
// its WorkerConfig on the worker's command line (worker_command_line.hpp).
#include <chrono>
#include <cstdint>
#include <string>

#include "kvpager/common/units.hpp"
#include "kvpager/kv/kv_geometry.hpp"
#include "kvpager/vmm/backend.hpp"
#include "kvpager/vmm/fault_injecting_backend.hpp"

namespace kvpager::tp {

// Which device rank r uses: kPerRank = device r, kSame = device 0 for every rank,
// kAuto = per-rank when that many CUDA devices exist, else same.
enum class DeviceMode { kAuto, kPerRank, kSame };
DeviceMode parse_device_mode(const std::string& name);  // "auto" | "per-rank" | "same"
const char* device_mode_name(DeviceMode mode);

// Whether ranks that share one device take turns at the driver (device_lock.hpp). kAuto = off:
// on one H100 every paired run was faster without the lock (tp 4 interleaved 0.210 / 0.129 ms
// vs 0.220 / 0.136; map-parallel parallel/serial 0.81 vs 1.11; docs/benchmarks.md), because the
// driver overlaps the user-mode part of different processes' calls and serialises only its own
// critical section, while the lock serialises whole commands and adds a hand-off.
// KVPAGER_TP_DEVICE_LOCK=auto|on|off.
enum class DeviceLockMode { kAuto, kOn, kOff };
DeviceLockMode parse_device_lock_mode(const std::string& name);  // "auto" | "on" | "off"

enum class Transport { kSocket, kShm };
const char* transport_name(Transport transport);
Transport parse_transport(const std::string& name);  // "socket" | "shm"

// A failure armed in one worker's backend (FaultInjectingBackend), to test rollback: the
// nth call of `op` counted from the worker's first command fails with a DriverError.
struct FaultSpec {
  int rank = -1;  // -1: no fault
  vmm::BackendOp op = vmm::BackendOp::kMap;
  int nth_call = 1;
};
// "map:2" / "set_access:1" / "unmap:3" (op:nth); InvalidArgument otherwise.
FaultSpec parse_fault(const std::string& text, int rank);
std::string format_fault(const FaultSpec& fault);

// What one worker process builds: backend, page pool, KV space.
struct WorkerConfig {
  vmm::BackendConfig backend;  // `device` is overridden per rank by the scheduler
  kv::KvGeometry geometry;
  kv::KvLayout layout = kv::KvLayout::kInterleaved;
  uint64_t virtual_bytes = 0;       // size of the KV space; 0 = the device's total memory
  uint64_t num_blocks = 0;          // blocks of the KV space; 0 = as many as virtual_bytes hold
  uint64_t handle_bytes = 2 * MiB;  // physical handle (and page) size per tensor
  uint32_t ready_pages = 1;         // logical pages of handles created before "ready"
  bool pool = true;                 // false: create handles inside map, release inside unmap
  bool background_refill = false;   // a pool thread keeps handles ready (--async-sched)
  uint32_t spin_us = 1000;          // shm: spin for the next command before sleeping
  uint32_t lock_spin_us = 2000;     // spin for the device lock before sleeping
};

// Spinning (spin_us, worker.spin_us, worker.lock_spin_us) is turned off by the scheduler when the
// process may use fewer CPUs than tp_size + 1: a spinner would only steal the CPU its peer needs.
struct TpConfig {
  int tp_size = 1;               // 1..64 worker processes
  std::string strategy = "shm";  // a name from strategies()
  DeviceMode device_mode = DeviceMode::kAuto;
  WorkerConfig worker;
  std::chrono::milliseconds timeout{10000};  // per broadcast (seq: per rank); KVPAGER_TP_TIMEOUT_MS
  std::chrono::milliseconds start_timeout{120000};  // workers ready; KVPAGER_TP_START_TIMEOUT_MS
  uint32_t spin_us = 1000;                          // shm: spin for acks before sleeping
  std::string worker_binary;  // kvpager binary run as `tp-worker`; "" = this executable
  DeviceLockMode device_lock = DeviceLockMode::kAuto;
  FaultSpec fault;
};

// Fills timeouts and spins from KVPAGER_TP_TIMEOUT_MS, KVPAGER_TP_START_TIMEOUT_MS,
// KVPAGER_TP_SPIN_US, KVPAGER_TP_WORKER_SPIN_US, KVPAGER_TP_LOCK_SPIN_US, and the device lock from
// KVPAGER_TP_DEVICE_LOCK (unset ones keep their value); InvalidArgument naming the variable for a
// malformed value.
TpConfig tp_config_from_env(TpConfig config = TpConfig{});

// The geometry the benchmarks use (as the seeds do): `num_layers` layers, 8 KV heads x 128,
// fp16, `block_size` tokens per block (32 layers, block 16: a 2 MiB interleaved cell).
kv::KvGeometry bench_geometry(uint32_t num_layers, uint32_t block_size);

// The smallest handle size >= `wanted` (a multiple of `granularity`) that holds one
// interleaved cell of `geometry`; `wanted` itself for the per-layer layout when a block fits.
uint64_t handle_bytes_for(const kv::KvGeometry& geometry, kv::KvLayout layout, uint64_t wanted,
                          uint64_t granularity);

}  // namespace kvpager::tp
