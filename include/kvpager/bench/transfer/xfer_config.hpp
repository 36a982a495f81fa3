#pragma once
// The transfer benchmark's configuration: every nixlbench flag with nixlbench's default, plus
// the few kvpager additions (benchmark_group, rank, spawn_local, cuda_ipc, peer_timeout_s,
// copy_engine).
// `kvbench plan` fills it from a model plan and prints it; `kvbench profile` hands it to
// nixlbench or to `kvpager bench xfer`. Plain value type.
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "kvpager/model/kv_sizing.hpp"

namespace kvpager::transfer {

struct XferConfig {
  // nixlbench flags, in nixlbench's order (the order `plan` prints them in).
  std::string backend = "UCX";  // UCX | UCX_MO | GDS | POSIX | CUDA
  bool check_consistency = false;
  std::string device_list = "all";
  bool enable_pt = false;
  std::string etcd_endpoints = "http://localhost:2379";
  bool storage_enable_direct = false;
  std::string gds_filepath;
  bool enable_vmm = false;
  std::string initiator_seg_type = "DRAM";  // DRAM | VRAM
  uint64_t max_batch_size = 1;
  uint64_t max_block_size = 64ull << 20;
  std::string mode = "SG";  // SG | MG
  uint64_t num_initiator_dev = 1;
  uint64_t num_iter = 1000;
  uint64_t num_target_dev = 1;
  uint64_t num_threads = 1;
  std::string op_type = "WRITE";  // WRITE | READ
  std::string runtime_type = "ETCD";
  std::string scheme = "pairwise";  // pairwise | manytoone | onetomany | tp
  uint64_t start_batch_size = 1;
  uint64_t start_block_size = 4096;
  std::string target_seg_type = "DRAM";  // DRAM | VRAM | FILE
  uint64_t total_buffer_size = 8ull << 30;
  uint64_t warmup_iter = 100;
  std::string worker_type = "nixl";  // nixl | nvshmem

  // kvpager additions (never passed to nixlbench).
  std::string benchmark_group = "default";  // etcd namespace of one run
  std::optional<uint32_t> rank;             // claim this rank instead of the first free one
  bool spawn_local = false;                 // start every rank of the world on this host
  bool cuda_ipc = false;                    // CUDA: target in another process (VMM handles)
  uint64_t peer_timeout_s = 60;             // how long to wait for peers in etcd
  std::string copy_engine = "auto";         // CUDA: auto | per-block | batch | kernel
                                            // (copy_plan.hpp)

  // Throws InvalidArgument naming the flag for an unknown enum value, a zero size or count,
  // start > max, or a scheme/device count combination that cannot pair up.
  void validate() const;
  // validate(), and bounds on what running the plan allocates and counts: at most
  // kMaxXferDevices devices and kMaxXferThreads threads, at most kMaxXferOpsPerBatch block
  // descriptors per batch (each batch is built in memory), and bytes per row below 2^64.
  // Called before anything runs (kvbench profile checks every config's plan up front).
  void validate_for_run() const;
};

inline constexpr uint64_t kMaxXferDevices = 1024;
inline constexpr uint64_t kMaxXferThreads = 1024;
inline constexpr uint64_t kMaxXferOpsPerBatch = 1ull << 22;  // 4 Mi descriptors, 128 MiB

using FlagValue = std::variant<bool, uint64_t, std::string>;
struct XferFlag {
  std::string name;  // without dashes, e.g. "max_batch_size"
  FlagValue value;
  bool is_default = false;
};

// Every nixlbench flag, in order, with its value and whether it equals the default.
std::vector<XferFlag> nixlbench_flags(const XferConfig& config);

// argv for nixlbench: non-default flags only, "--name value" ("--name" alone for true bools).
std::vector<std::string> nixlbench_argv(const XferConfig& config);

// Where the descriptors live (kvbench's --source / --destination): file | memory | gpu.
struct Endpoints {
  std::string source = "file";
  std::string destination = "memory";
};

// Sets segment types and op type for `backend` from the endpoints, as kvbench does:
//   GDS    file -> READ into VRAM; gpu -> WRITE, target VRAM; memory -> WRITE DRAM to DRAM
//   POSIX  file -> READ into DRAM; memory -> WRITE from DRAM
//   UCX, UCX_MO, CUDA  memory -> DRAM, gpu -> VRAM for initiator (source) and target (dest.)
// Throws InvalidArgument for a combination the backend cannot move.
void configure_segments(XferConfig& config, const Endpoints& endpoints);

// The plan for one model config: block and batch sizes from the geometry (start = max), the
// TP scheme's device counts, and the segment types. `base` carries the user's flags.
XferConfig plan_transfer(const model::TransferGeometry& geometry,
                         const model::ModelConfig& model_config, XferConfig base,
                         const Endpoints& endpoints);

}  // namespace kvpager::transfer
