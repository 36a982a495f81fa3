#include "kvpager/bench/transfer/xfer_bench.hpp"

#include <ostream>

#include "kvpager/bench/transfer/cuda_engine.hpp"
#include "kvpager/bench/transfer/posix_engine.hpp"
#include "kvpager/common/error.hpp"
#include "ucx_engine.hpp"
#include "xfer_rows.hpp"

namespace kvpager::transfer {

namespace {

constexpr uint64_t kReadSeed = 0x5EEDull << 32;

XferReport run_local(LocalEngine& engine, const XferConfig& c, const XferLayout& l,
                     std::ostream& table, std::string description) {
  const bool write = c.op_type == "WRITE";
  std::vector<std::unique_ptr<BlockMover>> movers;
  for (uint32_t t = 0; t < c.num_threads; ++t) movers.push_back(engine.mover(t, write));
  XferReport report;
  report.backend = c.backend;
  report.description = std::move(description);
  print_table_header(table);
  uint64_t total_bad = 0;
  for (const auto& row : detail::rows_of(c)) {
    const uint64_t used = detail::used_bytes(l, row);
    if (c.check_consistency) {
      for (const Flow& f : l.flows) {
        Segment& target = engine.target(f.target - l.initiators);
        if (write) {
          engine.initiator().fill(f.initiator_base, used, f.initiator_base,
                                  pattern_seed(0, row.index));
        } else {
          target.fill(f.target_base, used, f.target_base, kReadSeed);
          engine.initiator().clear(f.initiator_base, used);
        }
      }
    }
    const auto ops = detail::ops_for(l, 0, row, static_cast<uint32_t>(c.num_threads));
    XferRow r{row.block, row.batch, c.num_iter, 0, 0, 0, c.check_consistency};
    r.seconds = detail::run_iterations(movers, ops, c.warmup_iter, c.num_iter);
    r.bytes = row.block * row.batch * l.flows.size() * c.num_iter;
    if (c.check_consistency) {
      for (const Flow& f : l.flows) {
        Segment& target = engine.target(f.target - l.initiators);
        r.mismatches +=
            write ? target.mismatches(f.target_base, used, f.initiator_base,
                                      pattern_seed(0, row.index))
                  : engine.initiator().mismatches(f.initiator_base, used, f.target_base, kReadSeed);
      }
    }
    total_bad += r.mismatches;
    print_table_row(table, r);
    report.rows.push_back(r);
  }
  movers.clear();
  engine.finish();
  if (total_bad > 0) {
    throw Error("--check_consistency: " + std::to_string(total_bad) +
                " bytes differ from what was sent");
  }
  return report;
}

}  // namespace

XferReport run_xfer_bench(const XferConfig& c, std::ostream& table) {
  c.validate_for_run();
  if (c.enable_vmm) {
    throw InvalidArgument(
        "--enable_vmm: kvpager bench xfer allocates DRAM through UCX (shared "
        "memory) or as pinned CUDA host memory; VMM-backed DRAM is not offered");
  }
  if (c.worker_type != "nixl") {
    throw InvalidArgument("--worker_type " + c.worker_type +
                          ": kvpager bench xfer runs nixl-style workers only");
  }
  if (c.mode == "MG") {
    throw InvalidArgument(
        "--mode MG: kvpager bench xfer drives one device per process (SG); "
        "start one rank per device");
  }
  const XferLayout layout = make_layout(c);
  if (c.backend == "UCX" || c.backend == "UCX_MO") return detail::run_ucx_rank(c, layout, table);
  if (c.backend == "POSIX" || c.backend == "GDS") {
    auto engine = make_posix_engine(c, layout);
    std::string what = c.op_type == "WRITE" ? "DRAM -> file" : "file -> DRAM";
    if (c.backend == "GDS") what += " (POSIX io_uring standing in for GDS/cuFile)";
    return run_local(*engine, c, layout, table,
                     "POSIX io_uring " + what + (c.storage_enable_direct ? ", O_DIRECT" : ""));
  }
  // CUDA
  if (c.cuda_ipc) {
    if (layout.initiators != 1 || layout.targets != 1) {
      throw InvalidArgument("--cuda_ipc runs one initiator and one target (pairwise)");
    }
    if (!c.rank || *c.rank > 1) {
      throw InvalidArgument(
          "--cuda_ipc: pass --rank 0 (initiator) or --rank 1 (target), or "
          "--spawn_local to start both");
    }
    if (*c.rank == 1) {
      serve_cuda_ipc_target(c, layout);
      return {};
    }
    auto engine = connect_cuda_ipc(c, layout);
    return run_local(*engine, c, layout, table,
                     "CUDA " + c.initiator_seg_type + (c.op_type == "WRITE" ? " -> " : " <- ") +
                         "VRAM exported by another process (VMM POSIX fd handle), " +
                         engine->how());
  }
  auto engine = make_cuda_engine(c, layout);
  return run_local(*engine, c, layout, table,
                   "CUDA " + c.initiator_seg_type + (c.op_type == "WRITE" ? " -> " : " <- ") +
                       c.target_seg_type + ", " + engine->how());
}

}  // namespace kvpager::transfer
