#pragma once
// CUDA backend. Compiled everywhere; the driver is reached only through
// kvpager::vmm::CudaDriver (dlopen), so a machine without a GPU gets a clear error when it asks
// for this backend and nothing else changes.
//   local     initiator and target segments in this process: DRAM = pinned host memory
//             (cuMemAllocHost), VRAM = cuMemAlloc on the device from --device_list (target on
//             the second listed device when there is one: GPU<->GPU). Blocks move on one
//             stream per thread with the --copy_engine (copy_plan.hpp): per-block
//             cuMemcpyAsync, one cuMemcpyBatchAsync per batch, or one copy-kernel launch per
//             batch (the kernel module is loaded once per engine).
//   cuda_ipc  two processes: the target (rank 1) allocates VRAM with cuMemCreate, exports it
//             as a POSIX file descriptor and hands it over an abstract UNIX socket named after
//             --benchmark_group (no etcd needed); the initiator (rank 0) imports and maps it,
//             copies as above, and tells the target when it may release the memory.
// Owns every allocation, mapping, stream and socket it makes; releases them in reverse order.
#include <iosfwd>
#include <memory>

#include "kvpager/bench/transfer/segment.hpp"
#include "kvpager/bench/transfer/xfer_config.hpp"
#include "kvpager/bench/transfer/xfer_layout.hpp"
#include "kvpager/bench/transfer/xfer_report.hpp"

namespace kvpager::transfer {

// Throws DriverError when there is no driver or device, InvalidArgument for a layout other
// than one initiator (targets: one per flow, at most the listed devices) or a --copy_engine
// that cannot run here (resolve_copy_engine).
std::unique_ptr<LocalEngine> make_cuda_engine(const XferConfig& config, const XferLayout& layout);

// The target side of cuda_ipc (rank 1): export, serve, wait for the initiator to finish.
void serve_cuda_ipc_target(const XferConfig& config, const XferLayout& layout);

// The initiator side of cuda_ipc (rank 0): a LocalEngine whose target is the imported memory.
std::unique_ptr<LocalEngine> connect_cuda_ipc(const XferConfig& config, const XferLayout& layout);

}  // namespace kvpager::transfer
