#include "kvpager/tp/command_executor.hpp"

#include <exception>
#include <thread>
#include <vector>

#include "kvpager/common/error.hpp"
#include "kvpager/vmm/backend.hpp"

namespace kvpager::tp {

CommandExecutor::CommandExecutor(const WorkerConfig& config, const FaultSpec& fault,
                                 DeviceLock* device_lock)
    : config_(config), fault_(fault), device_lock_(device_lock) {
  backend_ = vmm::make_backend(config_.backend);
  if (fault_.rank >= 0) {
    fault_backend_ = std::make_shared<vmm::FaultInjectingBackend>(backend_);
    backend_ = fault_backend_;
  }
  const uint64_t handle = handle_bytes_for(config_.geometry, config_.layout, config_.handle_bytes,
                                           backend_->granularity());
  kv::KvSpaceConfig sc;
  sc.geometry = config_.geometry;
  sc.layout = config_.layout;
  const uint64_t virtual_bytes =
      config_.virtual_bytes != 0 ? config_.virtual_bytes : backend_->memory_info().total_bytes;
  sc.num_blocks =
      config_.num_blocks != 0
          ? config_.num_blocks
          : std::max<uint64_t>(1, virtual_bytes / config_.geometry.block_bytes_all_layers());
  sc.num_blocks = std::min<uint64_t>(sc.num_blocks, INT32_MAX);

  pool::PagePoolConfig pc;
  pc.handle_bytes = handle;
  pc.min_ready = 0;
  pc.max_ready = 0;
  pc.background = config_.pool && config_.background_refill;
  pool_ = std::make_unique<pool::PagePool>(backend_, nullptr, pc);
  space_ = std::make_unique<kv::KvSpace>(backend_, *pool_, sc);
  if (config_.ready_pages > space_->num_pages()) {
    throw InvalidArgument(std::to_string(config_.ready_pages) +
                          " pages asked to be ready, but the KV space has only " +
                          std::to_string(space_->num_pages()) + " virtual pages");
  }
  prefill_pool();
  if (fault_backend_) fault_backend_->fail_on(fault_.op, fault_.nth_call);
}

CommandExecutor::~CommandExecutor() {
  space_.reset();  // gives its handles back to the pool first
  pool_.reset();
}

void CommandExecutor::prefill_pool() {
  if (!config_.pool) return;  // max_ready 0: unmap releases, map creates
  const size_t n = size_t{config_.ready_pages} * space_->handles_per_page();
  if (config_.background_refill) {
    pool_->set_watermarks(n, 2 * n + space_->handles_per_page());
    while (pool_->stats().ready < n) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return;
  }
  pool_->set_watermarks(0, n);
  std::vector<vmm::PhysicalHandle> handles(n);
  pool_->acquire(handles);
  pool_->give_back(handles);
}

void CommandExecutor::hello(Reply& out) const {
  out = Reply{};
  out.status = ReplyStatus::kOk;
  describe_space(out);
  out.start_ns = out.end_ns = monotonic_ns();
}

void CommandExecutor::describe_space(Reply& out) const {
  out.num_pages = space_->num_pages();
  out.mapped_pages = space_->mapped_pages();
  out.handles_per_page = static_cast<uint32_t>(space_->handles_per_page());
  out.handle_bytes = space_->handle_bytes();
  out.cell_bytes = space_->tensor(0, 0).block_stride_bytes;
  out.num_blocks = space_->num_blocks();
  out.device = backend_->device();
  out.device_kind = static_cast<uint32_t>(backend_->kind());
}

void CommandExecutor::set_unmap_stream(uintptr_t stream) {
  unmap_stream_.store(stream);
  wait_for_stream_.store(true);
}

void CommandExecutor::unmap_all() noexcept {
  for (uint32_t p = 0; p < space_->num_pages(); ++p) {
    try {
      if (space_->state(PageId(p)) == kv::PageState::kMapped) space_->unmap_page(PageId(p));
    } catch (...) {
      // Left to the space's destructor.
    }
  }
}

void CommandExecutor::check_range(const Command& command) const {
  if (command.count > kMaxPagesPerCommand) {
    throw InvalidArgument("command lists " + std::to_string(command.count) + " pages (at most " +
                          std::to_string(kMaxPagesPerCommand) + ")");
  }
  for (uint32_t i = 0; i < command.count; ++i) {
    if (command.pages[i] >= space_->num_pages()) {
      throw InvalidArgument("page " + std::to_string(command.pages[i]) +
                            " is beyond the virtual range of " +
                            std::to_string(space_->num_pages()) + " pages");
    }
  }
}

namespace {
// Runs `step(i)` from i = 0 until every page of the command is done; a step does pages[i..i+n)
// and returns n. On a throw, runs `undo` for the pages done, newest first, and rethrows (as
// StateError when an undo fails too).
template <class Step, class Undo>
void all_or_nothing(const Command& command, Step step, Undo undo) {
  uint32_t done = 0;
  try {
    while (done < command.count) done += step(done);
  } catch (...) {
    const std::exception_ptr original = std::current_exception();
    std::string undo_failures;
    while (done > 0) {
      --done;
      try {
        undo(PageId(command.pages[done]));
      } catch (const std::exception& e) {
        undo_failures +=
            "; undo of page " + std::to_string(command.pages[done]) + " failed: " + e.what();
      }
    }
    if (undo_failures.empty()) std::rethrow_exception(original);
    try {
      std::rethrow_exception(original);
    } catch (const std::exception& e) {
      throw StateError(e.what() + undo_failures);
    }
  }
}

// The length of the run of consecutive page ids starting at pages[i].
uint32_t run_length(const Command& command, uint32_t i) {
  uint32_t n = 1;
  while (i + n < command.count && command.pages[i + n] == command.pages[i] + n) ++n;
  return n;
}
}  // namespace

// Each command holds the device lock (if any) once, for all its driver calls.
void CommandExecutor::map_pages(const Command& command) {
  check_range(command);
  DeviceLockGuard turn(device_lock_, std::chrono::microseconds(config_.lock_spin_us));
  // Consecutive ids map as one run: one set-access per tensor for the run (KvSpace::map_run).
  all_or_nothing(
      command,
      [&](uint32_t i) {
        const uint32_t n = run_length(command, i);
        space_->map_run(PageId(command.pages[i]), n);
        return n;
      },
      [&](PageId p) { space_->unmap_page(p); });
}

void CommandExecutor::unmap_pages(const Command& command) {
  check_range(command);
  if (wait_for_stream_.load()) backend_->wait_for_stream(unmap_stream_.load());
  DeviceLockGuard turn(device_lock_, std::chrono::microseconds(config_.lock_spin_us));
  all_or_nothing(
      command,
      [&](uint32_t i) {
        space_->unmap_page(PageId(command.pages[i]));
        return 1u;
      },
      [&](PageId p) { space_->map_page(p); });
}

void CommandExecutor::execute(const Command& command, Reply& out) {
  out.seq = command.seq;
  out.start_ns = monotonic_ns();
  out.state_checksum = 0;
  out.call[0] = out.result[0] = out.message[0] = '\0';
  try {
    switch (command.kind) {
      case CommandKind::kMap:
        map_pages(command);
        break;
      case CommandKind::kUnmap:
        unmap_pages(command);
        break;
      case CommandKind::kQuery: {
        std::vector<uint32_t> mapped;
        for (uint32_t p = 0; p < space_->num_pages(); ++p) {
          if (space_->state(PageId(p)) == kv::PageState::kMapped) mapped.push_back(p);
        }
        out.state_checksum = page_state_checksum(mapped);
        break;
      }
      case CommandKind::kPing:
      case CommandKind::kShutdown:
        break;
      default:
        throw InvalidArgument("unknown command kind " +
                              std::to_string(static_cast<uint32_t>(command.kind)));
    }
    out.status = ReplyStatus::kOk;
  } catch (...) {
    reply_from_current_exception(out);
  }
  describe_space(out);
  out.end_ns = monotonic_ns();
}

void throw_reply_error(const Reply& reply, const std::string& message, int rank) {
  switch (reply.status) {
    case ReplyStatus::kInvalidArgument:
      throw InvalidArgument(message);
    case ReplyStatus::kOutOfMemory:
      throw OutOfMemory(message);
    case ReplyStatus::kDriverError:
      throw DriverError("tp rank " + std::to_string(rank) + ": " + reply.call, reply.result,
                        message);
    case ReplyStatus::kTimeout:
      throw Timeout(message);
    case ReplyStatus::kDied:
    case ReplyStatus::kProtocol:
    case ReplyStatus::kStateError:
      throw StateError(message);
    default:
      throw Error(message);
  }
}

void reply_from_current_exception(Reply& out) {
  try {
    throw;
  } catch (const InvalidArgument& e) {
    out.status = ReplyStatus::kInvalidArgument;
    copy_text(out.message, e.what());
  } catch (const OutOfMemory& e) {
    out.status = ReplyStatus::kOutOfMemory;
    copy_text(out.message, e.what());
  } catch (const DriverError& e) {
    out.status = ReplyStatus::kDriverError;
    copy_text(out.call, e.call());
    copy_text(out.result, e.result());
    copy_text(out.message, e.what());
  } catch (const StateError& e) {
    out.status = ReplyStatus::kStateError;
    copy_text(out.message, e.what());
  } catch (const std::exception& e) {
    out.status = ReplyStatus::kFailed;
    copy_text(out.message, e.what());
  } catch (...) {
    out.status = ReplyStatus::kFailed;
    copy_text(out.message, "unknown exception");
  }
}

}  // namespace kvpager::tp
