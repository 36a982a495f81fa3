#pragma once
// TpScheduler: the scheduler side of tensor parallelism. It starts tp_size worker processes
// (`kvpager tp-worker`), each owning the KV tensors of its rank (KvSpace + PagePool on its
// device), and broadcasts page commands to them with the chosen strategy.
//
// Every call returns when all ranks acknowledged, or throws naming each failing rank and its
// reason, with the type of the first failure: InvalidArgument (bad page id or state: nothing
// changed), OutOfMemory, DriverError, Timeout (a rank did not answer within config.timeout),
// StateError (a rank died, or died/hung earlier).
//  - Page ids are checked against the virtual range before any rank is asked to map anything.
//  - map/unmap are all or nothing across ranks: when some ranks fail, the ranks that
//    succeeded are rolled back with the inverse command before the error is thrown.
//  - A rank that died or timed out is killed and reaped at once; the scheduler is broken from
//    then on (every later call throws StateError naming it) and should be destroyed.
// Ownership: the scheduler owns the workers it spawned; the destructor shuts them down (kill
// after a grace period) and reaps them. Their channels are anonymous (socketpair, memfd);
// those of ranks that connected are abstract sockets (unix_channel.hpp), whose servers the
// scheduler does not own: shutdown ends their sessions. Nothing remains in the filesystem,
// even after a crash.
// Thread safety: none; one thread drives a scheduler. Create it on a thread that outlives it
// (see worker_process.hpp).
// Hot path (map/unmap/ping): no allocation on success.
#include <sys/types.h>

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kvpager/common/ids.hpp"
#include "kvpager/tp/broadcaster.hpp"
#include "kvpager/tp/device_lock.hpp"
#include "kvpager/tp/tp_config.hpp"

namespace kvpager::tp {

// One rank's answer to the kv-tensors-created query.
struct RankState {
  RankId rank;
  pid_t pid = -1;
  int device = 0;
  bool kv_tensors_created = false;
  uint32_t num_pages = 0;
  uint32_t mapped_pages = 0;
  uint32_t handles_per_page = 0;
  uint64_t state_checksum = 0;  // page_state_checksum() of the mapped pages
};

class TpScheduler {
 public:
  // Starts the workers and waits (config.start_timeout) until each reports its KV tensors
  // created; throws naming the rank that failed to start, after reaping every worker.
  explicit TpScheduler(TpConfig config);
  // Drives ranks that are already connected (their servers run in processes this one does not
  // own, rank r = links[r]; unix_channel.hpp, rank_server.hpp); config.tp_size becomes
  // links.size() and the strategy must be a socket one (seq, thread, async). Waits
  // (config.start_timeout) for every hello; throws naming the rank that refused, after closing
  // every channel. device_of(r) is the device rank r reported. shutdown() asks each rank to end
  // its session and closes the channels; the servers keep running.
  TpScheduler(TpConfig config, std::vector<std::unique_ptr<RankLink>> links);
  ~TpScheduler();
  TpScheduler(const TpScheduler&) = delete;
  TpScheduler& operator=(const TpScheduler&) = delete;

  const TpConfig& config() const { return config_; }
  const StrategyInfo& strategy() const { return strategy_; }
  int tp_size() const { return config_.tp_size; }
  uint32_t num_pages() const { return num_pages_; }  // smallest virtual range of all ranks
  uint32_t handles_per_page() const { return handles_per_page_; }
  int device_of(RankId rank) const { return devices_.at(rank.value); }
  pid_t worker_pid(RankId rank) const;
  // True when ranks share a device and take turns through a DeviceLock.
  bool device_lock_active() const { return !device_locks_.empty(); }

  void map(std::span<const PageId> pages);
  void unmap(std::span<const PageId> pages);
  void ping();
  std::vector<RankState> query();
  // Replies of the last successful command, one per rank (worker start/end times).
  std::span<const Reply> last_replies() const { return replies_; }
  // Each rank's hello: its KV space's page table inputs, device, pages mapped at the start.
  std::span<const Reply> hellos() const { return hellos_; }

  // Asks every live worker to exit, waits briefly, kills the rest, reaps all. Idempotent.
  void shutdown();

 private:
  void size_ranks();  // checks tp_size; sets all_ and replies_
  void await_hellos();
  void run(CommandKind kind, std::span<const PageId> pages);
  void check_usable() const;
  void broadcast(RankMask ranks);
  std::string collect_failures(RankMask ranks, RankMask& ok, int& first_failed);
  void rollback(CommandKind undo, RankMask ranks, std::string& message);
  [[noreturn]] void throw_failure(int rank, const std::string& message);

  TpConfig config_;
  const StrategyInfo& strategy_;
  std::vector<int> devices_;
  std::vector<std::unique_ptr<DeviceLock>> device_locks_;  // one per shared device
  std::vector<std::unique_ptr<RankLink>> links_;
  std::unique_ptr<Broadcaster> broadcaster_;  // destroyed before the links
  Command command_{};
  std::vector<Reply> replies_;
  std::vector<Reply> hellos_;
  RankMask all_ = 0;
  uint32_t num_pages_ = 0;
  uint32_t handles_per_page_ = 0;
  std::string broken_;  // why the scheduler can no longer broadcast
  bool shut_down_ = false;
};

}  // namespace kvpager::tp
