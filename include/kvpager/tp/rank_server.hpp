#pragma once
// RankServer: one tensor-parallel rank's KV memory inside a serving engine's own worker process
// (where its kernels read it), driven by a scheduler in another process (tp_page_store.hpp).
//
// The server owns the rank's backend, page pool and KV space (a CommandExecutor, exactly what
// a spawned `kvpager tp-worker` owns) and a thread that listens on the abstract socket
// rank_channel_name(token, rank) (unix_channel.hpp). The thread accepts a scheduler of the same
// uid (others are refused: their connection is closed before any message), sends the hello and
// serves its commands (command_loop.hpp) until a shutdown command or the scheduler's end of
// file; then it unmaps every page (no one is left to free them) and ends. Only one scheduler
// session per server; a scheduler that leaves before its first command (it could not reach
// every rank, or refused the geometry) was none, and the server listens again.
//
// Before a scheduler connects, the worker may back pages itself (map_local/unmap_local: an
// engine's warm-up runs kernels on blocks no scheduler handed out); a scheduler that connects
// while such pages are mapped is refused with a StateError hello naming them, so the engine
// must give them back first. Once a scheduler connected, map_local/unmap_local throw
// StateError.
//
// Ownership: the destructor stops the thread (shuts the session's socket down: the scheduler
// sees this rank gone), closes the sockets, then unmaps and releases everything.
// Thread safety: every public method is thread-safe. Commands and local maps take turns
// (one mutex around each execution).
// Errors: the constructor throws what CommandExecutor and listen_channel throw (the channel
// taken by another server is InvalidArgument); local maps throw the executor's errors (nothing
// changed on a throw). The serving thread never throws: a failure to accept is recorded
// (error()) and ends the thread.
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>

#include "kvpager/common/ids.hpp"
#include "kvpager/tp/command_executor.hpp"
#include "kvpager/tp/tp_config.hpp"
#include "kvpager/tp/unique_fd.hpp"

namespace kvpager::tp {

struct RankServerConfig {
  // backend (its device is this rank's), geometry (this rank's shard), layout, num_blocks,
  // handle_bytes. Keep ready_pages 0: the scheduler's budget charges mapped pages only.
  WorkerConfig worker;
  std::string token;  // the engine's channel token (unix_channel.hpp)
  RankId rank;
  FaultSpec fault;  // tests: a driver failure armed in this rank's backend (when fault.rank >= 0)
};

class RankServer {
 public:
  enum class Phase { kListening, kServing, kFinished };

  explicit RankServer(RankServerConfig config);
  ~RankServer();
  RankServer(const RankServer&) = delete;
  RankServer& operator=(const RankServer&) = delete;

  const RankServerConfig& config() const { return config_; }
  const std::string& channel() const { return channel_; }
  const kv::KvSpace& space() const { return executor_->space(); }
  Phase phase() const { return phase_.load(); }
  uint32_t mapped_pages() const { return executor_->space().mapped_pages(); }
  uint64_t refused_peers() const { return refused_.load(); }
  // Why the serving thread ended early ("" if it did not).
  std::string error() const;

  // Warm-up before a scheduler connects; all or nothing.
  void map_local(std::span<const PageId> pages);
  void unmap_local(std::span<const PageId> pages);
  // Unmap commands first wait for the work queued on this CUstream (an event, no device sync).
  void set_unmap_stream(uintptr_t stream) { executor_->set_unmap_stream(stream); }

 private:
  void run_local(CommandKind kind, std::span<const PageId> pages);
  void run() noexcept;
  UniqueFd accept_scheduler();  // invalid when stopping
  void serve(UniqueFd connection);

  RankServerConfig config_;
  std::string channel_;
  std::unique_ptr<CommandExecutor> executor_;
  UniqueFd listen_fd_;
  UniqueFd stop_fd_;          // an eventfd: the destructor wakes the accepting thread
  mutable std::mutex mutex_;  // around executor_->execute, and the fields below
  int session_fd_ = -1;       // the scheduler's connection while serving
  bool stopping_ = false;
  std::string error_;
  std::atomic<Phase> phase_{Phase::kListening};
  std::atomic<uint64_t> refused_{0};
  std::thread thread_;
};

}  // namespace kvpager::tp
