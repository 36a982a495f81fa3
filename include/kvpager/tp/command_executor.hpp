#pragma once
// CommandExecutor: the worker side of the protocol, independent of the transport. It owns the
// rank's backend, page pool and KV space (built from a WorkerConfig) and turns each Command
// into a Reply. A map or unmap of several pages is all or nothing on this rank: every id is
// checked against the range first, and a failure part-way undoes the pages already done.
// Errors become the reply's status and message; execute() never throws.
// Thread safety: one thread.
#include <atomic>
#include <memory>
#include <string>

#include "kvpager/kv/kv_space.hpp"
#include "kvpager/pool/page_pool.hpp"
#include "kvpager/tp/device_lock.hpp"
#include "kvpager/tp/protocol.hpp"
#include "kvpager/tp/tp_config.hpp"
#include "kvpager/vmm/fault_injecting_backend.hpp"

namespace kvpager::tp {

class CommandExecutor {
 public:
  // Builds backend, pool and space and fills the pool with config.ready_pages pages of
  // handles. Throws what they throw. With `device_lock`, map and unmap commands hold it (it
  // must outlive the executor).
  CommandExecutor(const WorkerConfig& config, const FaultSpec& fault,
                  DeviceLock* device_lock = nullptr);
  ~CommandExecutor();

  // Fills the hello: kOk with the page range, the page table's inputs and the device.
  void hello(Reply& out) const;
  // Executes `command` into `out` (out.seq = command.seq).
  void execute(const Command& command, Reply& out);
  // From now on, an unmap command first waits for the work queued on `stream` (a CUstream of
  // this process; an event, never a device-wide sync). Any thread.
  void set_unmap_stream(uintptr_t stream);
  // First call of a thread kvpager starts to execute commands on (vmm::Backend's promise).
  void prepare_background_thread() { backend_->prepare_background_thread(); }
  // Unmaps every mapped page (a scheduler that went away leaves no one to free them).
  void unmap_all() noexcept;

  const kv::KvSpace& space() const { return *space_; }

 private:
  void map_pages(const Command& command);
  void unmap_pages(const Command& command);
  void check_range(const Command& command) const;
  void prefill_pool();
  void describe_space(Reply& out) const;

  WorkerConfig config_;
  std::shared_ptr<vmm::Backend> backend_;
  std::shared_ptr<vmm::FaultInjectingBackend> fault_backend_;
  FaultSpec fault_;
  std::unique_ptr<pool::PagePool> pool_;
  std::unique_ptr<kv::KvSpace> space_;
  DeviceLock* device_lock_ = nullptr;
  std::atomic<uintptr_t> unmap_stream_{0};
  std::atomic<bool> wait_for_stream_{false};
};

// Fills `out` from the exception being handled (call inside a catch block).
void reply_from_current_exception(Reply& out);
// The inverse: throws the Error subclass of `reply.status` with `message` (from rank `rank`).
[[noreturn]] void throw_reply_error(const Reply& reply, const std::string& message, int rank);

}  // namespace kvpager::tp
