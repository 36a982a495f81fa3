#include "kvpager/tp/shm_link.hpp"

#include <cstring>

namespace kvpager::tp {

namespace {
// How often a sleeping scheduler looks whether the worker is still alive.
constexpr std::chrono::milliseconds kLivenessSlice{2};
}  // namespace

ShmLink::ShmLink(RankId rank, const std::string& binary, const std::vector<std::string>& args,
                 const std::vector<int>& extra_fds, std::chrono::nanoseconds spin)
    : spin_(spin) {
  std::vector<int> fds = {segment_.fd()};
  fds.insert(fds.end(), extra_fds.begin(), extra_fds.end());
  rank_ = rank;
  process_ = std::make_unique<WorkerProcess>(rank, binary, args, fds);
  pid_ = process_->pid();
  segment_.close_fd();  // the mapping stays; the memory goes with the last mapping
}

void ShmLink::post(const Command& command) {
  ShmRing& ring = segment_.ring();
  ++seq_;
  posted_at_ = Clock::now();
  Command& slot = ring.commands[seq_ % ShmRing::kDepth];
  std::memcpy(&slot, &command, command.wire_bytes());
  slot.seq = seq_;
  publish(ring.posted, ring.worker_waiting, static_cast<uint32_t>(seq_));
}

void ShmLink::await(Reply& out, Clock::time_point deadline) {
  ShmRing& ring = segment_.ring();
  const uint32_t target = static_cast<uint32_t>(seq_ + 1);
  const WaitResult r = wait_for(ring.replied, ring.scheduler_waiting, target, spin_, deadline,
                                kLivenessSlice, [&] { return process_->exited(); });
  if (r == WaitResult::kReady) {
    const Reply& slot = ring.replies[seq_ % ShmRing::kDepth];
    std::memcpy(&out, &slot, sizeof out);
    return;
  }
  if (r == WaitResult::kGaveUp || process_->exited()) {
    fail_died(out, "(while the scheduler waited for its reply)");
  } else {
    fail_timeout(out);
  }
}

}  // namespace kvpager::tp
