#include "kvpager/bench/transfer/xfer_config.hpp"

#include <algorithm>
#include <array>

#include "kvpager/common/error.hpp"

namespace kvpager::transfer {

namespace {

void one_of(const std::string& flag, const std::string& value,
            std::initializer_list<const char*> allowed) {
  std::string list;
  for (const char* a : allowed) {
    if (value == a) return;
    list += (list.empty() ? "" : ", ") + std::string(a);
  }
  throw InvalidArgument("--" + flag + " " + value + ": expected one of " + list);
}

void positive(const std::string& flag, uint64_t value) {
  if (value == 0) throw InvalidArgument("--" + flag + " 0: must be positive");
}

}  // namespace

void XferConfig::validate() const {
  one_of("backend", backend, {"UCX", "UCX_MO", "GDS", "POSIX", "CUDA"});
  one_of("initiator_seg_type", initiator_seg_type, {"DRAM", "VRAM"});
  one_of("target_seg_type", target_seg_type, {"DRAM", "VRAM", "FILE"});
  one_of("mode", mode, {"SG", "MG"});
  one_of("op_type", op_type, {"WRITE", "READ"});
  one_of("runtime_type", runtime_type, {"ETCD"});
  one_of("scheme", scheme, {"pairwise", "manytoone", "onetomany", "tp"});
  one_of("worker_type", worker_type, {"nixl", "nvshmem"});
  positive("max_batch_size", max_batch_size);
  positive("max_block_size", max_block_size);
  positive("start_batch_size", start_batch_size);
  positive("start_block_size", start_block_size);
  positive("num_iter", num_iter);
  positive("num_threads", num_threads);
  positive("num_initiator_dev", num_initiator_dev);
  positive("num_target_dev", num_target_dev);
  positive("total_buffer_size", total_buffer_size);
  positive("peer_timeout_s", peer_timeout_s);
  one_of("copy_engine", copy_engine, {"auto", "per-block", "batch", "kernel"});
  if (start_block_size > max_block_size) {
    throw InvalidArgument("--start_block_size " + std::to_string(start_block_size) +
                          " exceeds --max_block_size " + std::to_string(max_block_size));
  }
  if (start_batch_size > max_batch_size) {
    throw InvalidArgument("--start_batch_size " + std::to_string(start_batch_size) +
                          " exceeds --max_batch_size " + std::to_string(max_batch_size));
  }
  if (scheme == "pairwise" && num_initiator_dev != num_target_dev) {
    throw InvalidArgument("--scheme pairwise pairs initiators with targets: --num_initiator_dev " +
                          std::to_string(num_initiator_dev) + " must equal --num_target_dev " +
                          std::to_string(num_target_dev));
  }
  if (scheme == "manytoone" && num_target_dev != 1) {
    throw InvalidArgument("--scheme manytoone needs --num_target_dev 1");
  }
  if ((scheme == "onetomany" || scheme == "tp") && num_initiator_dev != 1) {
    throw InvalidArgument("--scheme " + scheme + " needs --num_initiator_dev 1");
  }
}

void XferConfig::validate_for_run() const {
  validate();
  auto at_most = [](const char* flag, uint64_t value, uint64_t most) {
    if (value > most) {
      throw InvalidArgument(std::string("--") + flag + " " + std::to_string(value) + ": at most " +
                            std::to_string(most));
    }
  };
  at_most("num_initiator_dev", num_initiator_dev, kMaxXferDevices);
  at_most("num_target_dev", num_target_dev, kMaxXferDevices);
  at_most("num_threads", num_threads, kMaxXferThreads);
  const uint64_t flows =
      scheme == "onetomany" || scheme == "tp" ? num_target_dev : num_initiator_dev;
  using u128 = unsigned __int128;
  const u128 ops = static_cast<u128>(max_batch_size) * flows;
  if (ops > kMaxXferOpsPerBatch) {
    throw InvalidArgument("a batch of " + std::to_string(max_batch_size) + " blocks x " +
                          std::to_string(flows) + " flow(s) is more than " +
                          std::to_string(kMaxXferOpsPerBatch) +
                          " block descriptors (--max_batch_size; for a kvbench plan: lower "
                          "--isl, --osl or --num_requests, or raise --page_size)");
  }
  const u128 row_bytes = ops * max_block_size * num_iter;
  if (row_bytes >> 64 != 0) {
    throw InvalidArgument("--num_iter " + std::to_string(num_iter) + " x --max_block_size " +
                          std::to_string(max_block_size) + " x " +
                          std::to_string(static_cast<uint64_t>(ops)) +
                          " blocks per batch moves 2^64 bytes or more per row: lower --num_iter");
  }
}

std::vector<XferFlag> nixlbench_flags(const XferConfig& c) {
  const XferConfig d;
  std::vector<XferFlag> f;
  auto add = [&](const char* name, FlagValue v, FlagValue dv) {
    const bool is_default = v == dv;
    f.push_back({name, std::move(v), is_default});
  };
  add("backend", c.backend, d.backend);
  add("check_consistency", c.check_consistency, d.check_consistency);
  add("device_list", c.device_list, d.device_list);
  add("enable_pt", c.enable_pt, d.enable_pt);
  add("etcd_endpoints", c.etcd_endpoints, d.etcd_endpoints);
  add("storage_enable_direct", c.storage_enable_direct, d.storage_enable_direct);
  add("gds_filepath", c.gds_filepath, d.gds_filepath);
  add("enable_vmm", c.enable_vmm, d.enable_vmm);
  add("initiator_seg_type", c.initiator_seg_type, d.initiator_seg_type);
  add("max_batch_size", c.max_batch_size, d.max_batch_size);
  add("max_block_size", c.max_block_size, d.max_block_size);
  add("mode", c.mode, d.mode);
  add("num_initiator_dev", c.num_initiator_dev, d.num_initiator_dev);
  add("num_iter", c.num_iter, d.num_iter);
  add("num_target_dev", c.num_target_dev, d.num_target_dev);
  add("num_threads", c.num_threads, d.num_threads);
  add("op_type", c.op_type, d.op_type);
  add("runtime_type", c.runtime_type, d.runtime_type);
  add("scheme", c.scheme, d.scheme);
  add("start_batch_size", c.start_batch_size, d.start_batch_size);
  add("start_block_size", c.start_block_size, d.start_block_size);
  add("target_seg_type", c.target_seg_type, d.target_seg_type);
  add("total_buffer_size", c.total_buffer_size, d.total_buffer_size);
  add("warmup_iter", c.warmup_iter, d.warmup_iter);
  add("worker_type", c.worker_type, d.worker_type);
  return f;
}

std::vector<std::string> nixlbench_argv(const XferConfig& config) {
  std::vector<std::string> argv{"nixlbench"};
  for (const auto& flag : nixlbench_flags(config)) {
    if (flag.is_default) continue;
    argv.push_back("--" + flag.name);
    if (const auto* s = std::get_if<std::string>(&flag.value)) argv.push_back(*s);
    if (const auto* n = std::get_if<uint64_t>(&flag.value)) argv.push_back(std::to_string(*n));
    // a true bool is the flag alone
  }
  return argv;
}

void configure_segments(XferConfig& c, const Endpoints& e) {
  for (const auto& [flag, v] : {std::pair{"source", e.source}, {"destination", e.destination}}) {
    one_of(flag, v, {"file", "memory", "gpu"});
  }
  if (c.backend == "GDS") {
    if (e.source == "file") {
      c.op_type = "READ";
      c.target_seg_type = "VRAM";
    } else if (e.source == "gpu") {
      c.op_type = "WRITE";
      c.target_seg_type = "VRAM";
    } else {
      c.op_type = "WRITE";
      c.initiator_seg_type = "DRAM";
      c.target_seg_type = "DRAM";
    }
  } else if (c.backend == "POSIX") {
    if (e.source == "file") {
      c.op_type = "READ";
      c.target_seg_type = "DRAM";
    } else if (e.source == "memory") {
      c.op_type = "WRITE";
      c.initiator_seg_type = "DRAM";
    } else {
      throw InvalidArgument("--source gpu: backend POSIX moves files and host memory; use GDS");
    }
  } else {
    auto seg = [&](const char* flag, const std::string& v) -> std::string {
      if (v == "memory") return "DRAM";
      if (v == "gpu") return "VRAM";
      throw InvalidArgument(std::string("--") + flag + " " + v + ": backend " + c.backend +
                            " moves memory (memory or gpu); files need --backend GDS or POSIX");
    };
    c.initiator_seg_type = seg("source", e.source);
    c.target_seg_type = seg("destination", e.destination);
  }
}

XferConfig plan_transfer(const model::TransferGeometry& g, const model::ModelConfig& mc,
                         XferConfig c, const Endpoints& endpoints) {
  c.start_block_size = c.max_block_size = g.block_bytes;
  c.start_batch_size = c.max_batch_size = g.batch_size;
  if (c.scheme == "tp") {
    c.num_initiator_dev = 1;
    c.num_target_dev = mc.strategy.tp_size;
  }
  configure_segments(c, endpoints);
  return c;
}

}  // namespace kvpager::transfer
