#include "kvpager/tp/tp_scheduler.hpp"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <thread>

#include "kvpager/common/error.hpp"
#include "kvpager/tp/command_executor.hpp"
#include "kvpager/tp/shm_link.hpp"
#include "kvpager/tp/socket_link.hpp"
#include "kvpager/tp/tp_worker.hpp"
#include "kvpager/vmm/cuda_driver.hpp"

namespace kvpager::tp {

namespace {

std::string self_executable() {
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) throw_errno("readlink", errno, "/proc/self/exe (the tp worker binary)");
  return std::string(buf, static_cast<size_t>(n));
}

int cuda_device_count(const vmm::BackendConfig& backend) {
  if (backend.choice == vmm::BackendChoice::kHost) return 0;
  if (!vmm::CudaDriver::device_present()) return 0;
  // Only cuInit and a count: no context is created in the scheduler, and workers exec.
  int count = 0;
  vmm::CudaDriver::get().cuDeviceGetCount(&count);
  return count;
}

int available_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
  return static_cast<int>(std::thread::hardware_concurrency());
}

std::string page_list(std::span<const PageId> pages) {
  std::string s = "[";
  for (size_t i = 0; i < pages.size() && i < 8; ++i) {
    s += (i ? "," : "") + std::to_string(pages[i].value);
  }
  if (pages.size() > 8) s += ",...";
  return s + "]";
}

}  // namespace

TpScheduler::TpScheduler(TpConfig config)
    : config_(std::move(config)), strategy_(find_strategy(config_.strategy)) {
  size_ranks();
  if (config_.worker_binary.empty()) config_.worker_binary = self_executable();
  const int devices = cuda_device_count(config_.worker.backend);
  DeviceMode mode = config_.device_mode;
  if (mode == DeviceMode::kAuto) {
    mode = devices >= config_.tp_size ? DeviceMode::kPerRank : DeviceMode::kSame;
  }
  if (mode == DeviceMode::kPerRank && devices > 0 && devices < config_.tp_size) {
    throw InvalidArgument("device mode per-rank needs " + std::to_string(config_.tp_size) +
                          " CUDA devices, " + std::to_string(devices) +
                          " present (use --device-mode same)");
  }
  config_.device_mode = mode;
  if (available_cpus() < config_.tp_size + 1) {
    // Spinning only steals the CPU the peer needs: sleep on the futex at once.
    config_.spin_us = 0;
    config_.worker.spin_us = 0;
    config_.worker.lock_spin_us = 0;
  }

  for (int r = 0; r < config_.tp_size; ++r) {
    devices_.push_back(mode == DeviceMode::kPerRank ? r : 0);
  }
  // Ranks that share a device take turns at the driver only when asked (tp_config.hpp says why
  // the default is off).
  const bool lock_devices = config_.device_lock == DeviceLockMode::kOn;
  std::vector<int> lock_fd(devices_.size(), -1);
  for (size_t r = 0; r < devices_.size(); ++r) {
    const auto sharing = std::count(devices_.begin(), devices_.end(), devices_[r]);
    if (!lock_devices || sharing < 2 || lock_fd[r] >= 0) continue;
    device_locks_.push_back(std::make_unique<DeviceLock>());
    for (size_t q = r; q < devices_.size(); ++q) {
      if (devices_[q] == devices_[r]) lock_fd[q] = device_locks_.back()->fd();
    }
  }

  // Spawn every worker first so they build their KV tensors in parallel, then wait for all.
  const std::chrono::nanoseconds spin = std::chrono::microseconds(config_.spin_us);
  for (int r = 0; r < config_.tp_size; ++r) {
    WorkerLaunch launch;
    launch.rank = RankId(static_cast<uint32_t>(r));
    launch.transport = strategy_.transport;
    launch.parent_pid = getpid();
    launch.config = config_.worker;
    launch.config.backend.device = devices_[static_cast<size_t>(r)];
    launch.fault = config_.fault;
    std::vector<int> extra_fds;
    if (lock_fd[static_cast<size_t>(r)] >= 0) {
      extra_fds.push_back(lock_fd[static_cast<size_t>(r)]);
      launch.device_lock_fd = kWorkerChannelFd + 1;
    }
    const auto args = worker_command_line(launch);
    if (strategy_.transport == Transport::kShm) {
      links_.push_back(
          std::make_unique<ShmLink>(launch.rank, config_.worker_binary, args, extra_fds, spin));
    } else {
      links_.push_back(
          std::make_unique<SocketLink>(launch.rank, config_.worker_binary, args, extra_fds));
    }
  }
  await_hellos();
}

TpScheduler::TpScheduler(TpConfig config, std::vector<std::unique_ptr<RankLink>> links)
    : config_(std::move(config)), strategy_(find_strategy(config_.strategy)) {
  links_ = std::move(links);
  config_.tp_size = static_cast<int>(links_.size());
  size_ranks();
  if (strategy_.transport != Transport::kSocket) {
    throw InvalidArgument("tp strategy '" + std::string(strategy_.name) +
                          "' needs workers this process spawns; ranks that connected speak over "
                          "sockets: choose seq, thread or async");
  }
  await_hellos();
  for (const Reply& hello : replies_) devices_.push_back(hello.device);
}

void TpScheduler::size_ranks() {
  if (config_.tp_size < 1 || config_.tp_size > kMaxRanks) {
    throw InvalidArgument("tp size " + std::to_string(config_.tp_size) + " must be 1.." +
                          std::to_string(kMaxRanks));
  }
  all_ = config_.tp_size == 64 ? ~RankMask{0} : (RankMask{1} << config_.tp_size) - 1;
  replies_.resize(static_cast<size_t>(config_.tp_size));
}

void TpScheduler::await_hellos() {
  const auto deadline = Clock::now() + config_.start_timeout;
  std::string failures;
  int first_failed = -1;
  for (int r = 0; r < config_.tp_size; ++r) {
    Reply& hello = replies_[static_cast<size_t>(r)];
    links_[static_cast<size_t>(r)]->await(hello, deadline);
    if (hello.status != ReplyStatus::kOk) {
      if (first_failed < 0) first_failed = r;
      failures += std::string(failures.empty() ? "" : "; ") + "rank " + std::to_string(r) + ": " +
                  hello.message;
      continue;
    }
    num_pages_ = r == 0 ? hello.num_pages : std::min(num_pages_, hello.num_pages);
    handles_per_page_ = hello.handles_per_page;
  }
  if (first_failed >= 0) {
    // The links' destructors kill and reap every worker.
    throw_failure(first_failed, "tp workers failed to start (" + std::string(strategy_.name) +
                                    ", tp " + std::to_string(config_.tp_size) + "): " + failures);
  }
  hellos_ = replies_;
  broadcaster_ = strategy_.make(links_);
}

TpScheduler::~TpScheduler() {
  try {
    shutdown();
  } catch (...) {
  }
}

pid_t TpScheduler::worker_pid(RankId rank) const {
  return links_.at(rank.value)->pid();
}

void TpScheduler::check_usable() const {
  if (shut_down_) throw StateError("tp scheduler: already shut down");
  if (!broken_.empty()) throw StateError("tp scheduler is broken: " + broken_);
}

void TpScheduler::broadcast(RankMask ranks) {
  broadcaster_->broadcast(command_, ranks, replies_, Clock::now() + config_.timeout);
}

std::string TpScheduler::collect_failures(RankMask ranks, RankMask& ok, int& first_failed) {
  std::string message;
  ok = 0;
  first_failed = -1;
  for (int r = 0; r < config_.tp_size; ++r) {
    if ((ranks >> r & 1) == 0) continue;
    Reply& reply = replies_[static_cast<size_t>(r)];
    if (reply.status == ReplyStatus::kOk) {
      ok |= RankMask{1} << r;
      continue;
    }
    if (first_failed < 0) first_failed = r;
    std::string what = reply.message;
    if (what.rfind("rank ", 0) != 0) what = "rank " + std::to_string(r) + ": " + what;
    message += (message.empty() ? "" : "; ") + what;
    if (reply.status == ReplyStatus::kTimeout || reply.status == ReplyStatus::kDied ||
        reply.status == ReplyStatus::kProtocol) {
      // A rank that hung, died or broke the protocol is out for good: kill it now (no zombie,
      // no late reply to confuse a later command).
      links_[static_cast<size_t>(r)]->drop();
      broken_ += (broken_.empty() ? "" : "; ") + what;
    }
  }
  return message;
}

void TpScheduler::rollback(CommandKind undo, RankMask ranks, std::string& message) {
  if (ranks == 0) return;
  const CommandKind original = command_.kind;
  command_.kind = undo;
  broadcast(ranks);
  command_.kind = original;
  RankMask undone = 0;
  int failed = -1;
  const std::string undo_failures = collect_failures(ranks, undone, failed);
  std::string list;
  for (int r = 0; r < config_.tp_size; ++r) {
    if (undone >> r & 1) list += (list.empty() ? "" : ",") + std::to_string(r);
  }
  if (!list.empty()) message += "; rolled back on rank(s) " + list;
  if (!undo_failures.empty()) {
    message += "; rollback FAILED: " + undo_failures;
    if (broken_.empty()) broken_ = "rollback failed: " + undo_failures;
  }
}

void TpScheduler::throw_failure(int rank, const std::string& message) {
  throw_reply_error(replies_[static_cast<size_t>(rank)], message, rank);
}

void TpScheduler::run(CommandKind kind, std::span<const PageId> pages) {
  check_usable();
  if (pages.size() > kMaxPagesPerCommand) {
    throw InvalidArgument("tp " + std::string(command_name(kind)) + ": " +
                          std::to_string(pages.size()) + " pages in one command (at most " +
                          std::to_string(kMaxPagesPerCommand) + ")");
  }
  for (const PageId p : pages) {
    if (p.value >= num_pages_) {
      throw InvalidArgument("tp " + std::string(command_name(kind)) + ": page " +
                            std::to_string(p.value) + " is beyond the virtual range of " +
                            std::to_string(num_pages_) +
                            " pages; no rank was asked to change anything");
    }
  }
  command_.kind = kind;
  command_.count = static_cast<uint32_t>(pages.size());
  for (size_t i = 0; i < pages.size(); ++i) command_.pages[i] = pages[i].value;
  broadcast(all_);
  bool all_ok = true;
  for (const Reply& r : replies_) all_ok = all_ok && r.status == ReplyStatus::kOk;
  if (all_ok) return;

  RankMask ok = 0;
  int first_failed = -1;
  std::string message = collect_failures(all_, ok, first_failed);
  message = "tp " + std::string(command_name(kind)) + " of " + std::to_string(pages.size()) +
            " page(s) " + page_list(pages) + " failed on " + message;
  const Reply saved = replies_[static_cast<size_t>(first_failed)];
  if (kind == CommandKind::kMap) rollback(CommandKind::kUnmap, ok, message);
  if (kind == CommandKind::kUnmap) rollback(CommandKind::kMap, ok, message);
  replies_[static_cast<size_t>(first_failed)] = saved;
  throw_failure(first_failed, message);
}

void TpScheduler::map(std::span<const PageId> pages) {
  run(CommandKind::kMap, pages);
}
void TpScheduler::unmap(std::span<const PageId> pages) {
  run(CommandKind::kUnmap, pages);
}
void TpScheduler::ping() {
  run(CommandKind::kPing, {});
}

std::vector<RankState> TpScheduler::query() {
  run(CommandKind::kQuery, {});
  std::vector<RankState> out;
  for (int r = 0; r < config_.tp_size; ++r) {
    const Reply& reply = replies_[static_cast<size_t>(r)];
    RankState s;
    s.rank = RankId(static_cast<uint32_t>(r));
    s.pid = worker_pid(s.rank);
    s.device = devices_[static_cast<size_t>(r)];
    s.kv_tensors_created = reply.num_pages > 0;
    s.num_pages = reply.num_pages;
    s.mapped_pages = reply.mapped_pages;
    s.handles_per_page = reply.handles_per_page;
    s.state_checksum = reply.state_checksum;
    out.push_back(s);
  }
  return out;
}

void TpScheduler::shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  RankMask live = 0;
  for (int r = 0; r < config_.tp_size; ++r) {
    if (!links_[static_cast<size_t>(r)]->gone()) live |= RankMask{1} << r;
  }
  if (broadcaster_ && live != 0) {
    command_.kind = CommandKind::kShutdown;
    command_.count = 0;
    const auto grace =
        std::min<std::chrono::milliseconds>(config_.timeout, std::chrono::milliseconds(2000));
    broadcaster_->broadcast(command_, live, replies_, Clock::now() + grace);
    for (auto& link : links_) link->wait_gone(grace);
  }
  broadcaster_.reset();
  for (auto& link : links_) link->drop();
}

}  // namespace kvpager::tp
