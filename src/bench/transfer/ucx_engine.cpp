#include "ucx_engine.hpp"

#include <nlohmann/json.hpp>

#include <memory>
#include <ostream>
#include <thread>
#include <vector>

#include "kvpager/common/error.hpp"
#include "ucx_resources.hpp"
#include "xfer_rows.hpp"
#include "xfer_world.hpp"

namespace kvpager::transfer::detail {

namespace {

constexpr uint64_t kReadSeed = 0x5EEDull << 32;  // every target's buffer for READ

std::string key(const char* what, uint32_t a) {
  return std::string(what) + "/" + std::to_string(a);
}
std::string key(const char* what, uint32_t a, uint32_t b) {
  return key(what, a) + "/" + std::to_string(b);
}

// A target keeps progressing its worker while it waits: puts that UCX emulates with active
// messages (shared-memory and TCP transports) complete only as the target progresses, so the
// target busy-polls as ucx_perftest's server does.
std::function<void()> idle_progress(UcxWorker& worker) {
  return [&worker] { worker.progress(); };
}

struct TargetInfo {
  std::string address;
  std::string rkey;
  uint64_t base = 0;
};

// One thread's worker, endpoints and keys.
class UcxMover final : public BlockMover {
 public:
  UcxMover(const UcxContext& ctx, const std::vector<TargetInfo>& targets, std::byte* local,
           bool write)
      : worker_(std::make_unique<UcxWorker>(ctx)), local_(local), write_(write) {
    for (const auto& t : targets) {
      if (t.address.empty()) {  // not a peer of this initiator
        eps_.emplace_back();
        rkeys_.emplace_back();
        bases_.push_back(0);
        continue;
      }
      eps_.push_back(std::make_unique<UcxEndpoint>(*worker_, t.address));
      rkeys_.push_back(std::make_unique<UcxRemoteKey>(*eps_.back(), t.rkey));
      bases_.push_back(t.base);
    }
  }
  ~UcxMover() override {
    for (void* req : pending_) ucp_request_free(req);  // after an error: released on completion
    rkeys_.clear();
    eps_.clear();  // endpoints close before the worker goes
  }

  void post(const BlockOp& op) override {
    ucp_request_param_t param{};
    void* local = local_ + op.local_offset;
    const uint64_t remote = bases_[op.peer] + op.remote_offset;
    void* req = write_ ? ucp_put_nbx(eps_[op.peer]->get(), local, op.bytes, remote,
                                     rkeys_[op.peer]->get(), &param)
                       : ucp_get_nbx(eps_[op.peer]->get(), local, op.bytes, remote,
                                     rkeys_[op.peer]->get(), &param);
    if (UCS_PTR_IS_ERR(req)) throw_ucs(write_ ? "ucp_put_nbx" : "ucp_get_nbx", UCS_PTR_STATUS(req));
    if (req != nullptr) pending_.push_back(req);
  }

  // Every put/get completes locally, then a flush completes them at the target.
  void wait() override {
    while (!pending_.empty()) {  // a request leaves the list before it can throw
      void* req = pending_.back();
      pending_.pop_back();
      worker_->wait(req, write_ ? "ucp_put_nbx" : "ucp_get_nbx");
    }
    ucp_request_param_t param{};
    worker_->wait(ucp_worker_flush_nbx(worker_->get(), &param), "ucp_worker_flush_nbx");
  }

 private:
  std::unique_ptr<UcxWorker> worker_;
  std::byte* local_;
  bool write_;
  std::vector<std::unique_ptr<UcxEndpoint>> eps_;
  std::vector<std::unique_ptr<UcxRemoteKey>> rkeys_;
  std::vector<uint64_t> bases_;
  std::vector<void*> pending_;
};

void check_segments(const XferConfig& c) {
  if (c.initiator_seg_type != "DRAM" || c.target_seg_type != "DRAM") {
    throw InvalidArgument("--backend " + c.backend +
                          ": this UCX build moves host memory (DRAM) only; use --backend CUDA "
                          "for VRAM");
  }
}

XferReport run_target(const XferConfig& c, const XferLayout& l, XferWorld& world) {
  const uint32_t rank = world.rank();
  UcxContext ctx(false);
  UcxWorker worker(ctx);
  UcxBuffer buffer(ctx, l.target_buffer_bytes());
  const bool write = c.op_type == "WRITE";
  if (!write) buffer.fill(0, buffer.size(), 0, kReadSeed);
  nlohmann::json info = {{"address", to_hex(worker.address())},
                         {"rkey", to_hex(buffer.packed_rkey())},
                         {"base", reinterpret_cast<uint64_t>(buffer.data())}};
  world.put(key("target", rank), info.dump());
  const auto flows = l.flows_of(rank);
  auto idle = idle_progress(worker);
  if (write && c.check_consistency) {
    for (const auto& row : rows_of(c)) {
      uint64_t bad = 0;
      for (const Flow& f : flows) {
        world.wait(key("done", row.index, f.initiator), f.initiator,
                   "initiator " + std::to_string(f.initiator) + " to finish row " +
                       std::to_string(row.index),
                   idle);
        bad += buffer.mismatches(f.target_base, used_bytes(l, row), f.initiator_base,
                                 pattern_seed(f.initiator, row.index));
      }
      world.put(key("verify", row.index, rank), std::to_string(bad));
    }
  }
  for (const Flow& f : flows) {
    world.wait(key("finished", f.initiator), f.initiator,
               "initiator " + std::to_string(f.initiator) + " to finish", idle);
  }
  world.put(key("bye", rank), "1");
  world.finish();
  return {};
}

XferReport run_initiator(const XferConfig& c, const XferLayout& l, XferWorld& world,
                         std::ostream& table) {
  const uint32_t rank = world.rank();
  const bool write = c.op_type == "WRITE";
  const auto flows = l.flows_of(rank);
  UcxContext ctx(c.num_threads > 1);
  UcxBuffer buffer(ctx, l.initiator_buffer_bytes());

  std::vector<TargetInfo> targets(l.targets);
  for (const Flow& f : flows) {
    const auto info = nlohmann::json::parse(
        world.wait(key("target", f.target), f.target, "target rank " + std::to_string(f.target)));
    auto& t = targets[f.target - l.initiators];
    t.address = from_hex(info.at("address").get<std::string>());
    t.rkey = from_hex(info.at("rkey").get<std::string>());
    t.base = info.at("base").get<uint64_t>();
  }
  std::vector<std::unique_ptr<BlockMover>> movers;
  for (uint64_t t = 0; t < c.num_threads; ++t) {
    movers.push_back(std::make_unique<UcxMover>(ctx, targets, buffer.data(), write));
  }

  XferReport report;
  report.backend = c.backend;
  report.description = std::string("UCX ") + (write ? "put" : "get") + " DRAM<->DRAM, " +
                       std::to_string(l.initiators) + " initiator(s) -> " +
                       std::to_string(l.targets) + " target(s), scheme " + c.scheme + ", " +
                       std::to_string(c.num_threads) + " thread(s) per initiator";
  if (rank == 0) print_table_header(table);
  uint64_t total_bad = 0;
  for (const auto& row : rows_of(c)) {
    const uint64_t used = used_bytes(l, row);
    if (c.check_consistency) {
      for (const Flow& f : flows) {
        if (write)
          buffer.fill(f.initiator_base, used, f.initiator_base, pattern_seed(rank, row.index));
        else
          buffer.clear(f.initiator_base, used);
      }
    }
    world.put(key("ready", row.index, rank), "1");
    for (uint32_t i = 0; i < l.initiators; ++i) {
      world.wait(key("ready", row.index, i), i,
                 "initiator " + std::to_string(i) + " for row " + std::to_string(row.index));
    }
    const auto ops = ops_for(l, rank, row, static_cast<uint32_t>(c.num_threads));
    const double seconds = run_iterations(movers, ops, c.warmup_iter, c.num_iter);
    uint64_t bad = 0;
    if (c.check_consistency) {
      if (write) {
        world.put(key("done", row.index, rank), "1");
        for (const Flow& f : flows) {
          bad += std::stoull(world.wait(key("verify", row.index, f.target), f.target,
                                        "target " + std::to_string(f.target) + " to verify row " +
                                            std::to_string(row.index)));
        }
      } else {
        for (const Flow& f : flows) {
          bad += buffer.mismatches(f.initiator_base, used, f.target_base, kReadSeed);
        }
      }
    }
    const uint64_t bytes = row.block * row.batch * flows.size() * c.num_iter;
    world.put(key("time", row.index, rank),
              nlohmann::json{{"seconds", seconds}, {"bytes", bytes}, {"bad", bad}}.dump());
    if (rank == 0) {
      XferRow r{row.block, row.batch, c.num_iter, 0, 0, 0, c.check_consistency};
      for (uint32_t i = 0; i < l.initiators; ++i) {
        const auto t = nlohmann::json::parse(world.wait(
            key("time", row.index, i), i, "initiator " + std::to_string(i) + " timings"));
        r.bytes += t.at("bytes").get<uint64_t>();
        r.seconds = std::max(r.seconds, t.at("seconds").get<double>());
        r.mismatches += t.at("bad").get<uint64_t>();
      }
      total_bad += r.mismatches;
      print_table_row(table, r);
      report.rows.push_back(r);
    }
  }
  movers.clear();
  world.put(key("finished", rank), "1");
  if (rank != 0) world.finish();
  if (rank == 0) {
    for (uint32_t t = l.initiators; t < l.world_size(); ++t) {
      world.wait(key("bye", t), t, "target " + std::to_string(t) + " to finish");
    }
    for (uint32_t i = 1; i < l.initiators; ++i) {
      world.wait(key("finished", i), i, "initiator " + std::to_string(i) + " to finish");
    }
    world.finish();
    if (total_bad > 0) {
      throw Error("--check_consistency: " + std::to_string(total_bad) +
                  " bytes differ from what was sent");
    }
  }
  return report;
}

}  // namespace

XferReport run_ucx_rank(const XferConfig& c, const XferLayout& l, std::ostream& table) {
  check_segments(c);
  XferWorld world(c, l);
  if (l.is_initiator(world.rank())) return run_initiator(c, l, world, table);
  return run_target(c, l, world);
}

}  // namespace kvpager::transfer::detail
