#pragma once
// InstanceRegistration: one KvCache instance's membership in the shared-memory registry. It
// owns the instance segment (<prefix>inst-<name>) and a slot in its device's segment, and is
// at once the MemoryBudget its page pool charges and the InstanceLink its KvCache follows.
//
// A charge must fit both the instance limit (set by `kvpager limit`, read from the instance
// segment) and the device budget (DeviceBudget, atomic across processes). The instance
// segment's mapped_bytes mirrors the slot's charge; used/reserved bytes and the heartbeat are
// published by poll().
// Ownership: create() returns a shared_ptr (the page pool and the KvCache share it). The
// destructor frees the slot and unlinks the segment unless another file has replaced it.
// Thread safety: all methods are thread-safe; poll() from one thread at a time.
// Errors: create() throws InvalidArgument for bad names or a guarantee the budget cannot
// cover, StateError when the name is in use
// by a live process or a segment is corrupt, DriverError for system calls. try_charge()
// returns false for a refusal and throws StateError if the slot was taken away.
#include <atomic>
#include <memory>
#include <string>

#include "kvpager/limits/device_budget.hpp"
#include "kvpager/limits/instance_link.hpp"
#include "kvpager/limits/memory_budget.hpp"
#include "kvpager/limits/registry_config.hpp"
#include "kvpager/limits/shm_file.hpp"

namespace kvpager::limits {

struct InstanceSpec {
  std::string name;                           // instance name, unique on the machine
  std::string model;                          // free text shown by list/top
  std::string device;                         // device label, e.g. "cuda0", "host0"
  uint64_t device_total_bytes = 0;            // device memory, for the default budget
  uint64_t limit_bytes = format::kUnlimited;  // initial instance limit
  uint64_t guarantee_bytes = 0;               // guaranteed share of the device budget
};

class InstanceRegistration final : public MemoryBudget,
                                   public InstanceLink,
                                   public std::enable_shared_from_this<InstanceRegistration> {
 public:
  static std::shared_ptr<InstanceRegistration> create(const RegistryConfig& config,
                                                      const InstanceSpec& spec);
  ~InstanceRegistration() override;
  InstanceRegistration(const InstanceRegistration&) = delete;
  InstanceRegistration& operator=(const InstanceRegistration&) = delete;

  // MemoryBudget: the charge against min(instance limit, device budget).
  [[nodiscard]] bool try_charge(uint64_t bytes) override;
  void uncharge(uint64_t bytes) override;
  uint64_t limit_bytes() const override;
  uint64_t charged_bytes() const override;
  // min(instance limit - own charge, device budget - every member's charge - what the other
  // members' live claims keep).
  uint64_t headroom_bytes() const override;
  // The larger of the charge above the instance limit and, while the device's charges sum
  // above its budget (it was lowered), the charge above the guarantee, at most that overshoot.
  uint64_t excess_bytes() const override;

  // InstanceLink.
  std::shared_ptr<MemoryBudget> budget() override { return shared_from_this(); }
  uint64_t instance_limit_bytes() const override;
  uint64_t guarantee_bytes() const override;
  std::chrono::milliseconds poll_interval() const override { return config_.poll_interval; }
  LinkEvents poll(const InstanceUsage& usage) noexcept override;
  void ask_for_room(uint64_t bytes) noexcept override;
  // How often the other members raised the device's pressure (were refused, or asked for room)
  // since this instance joined: this instance's own refusals and asks never count. Monotone; a
  // raise shows once it is complete. Lock-free.
  uint64_t pressure_from_others() noexcept;

  // Sets this instance's limit from inside the process (same effect as `kvpager limit`).
  void set_limit(uint64_t bytes);
  // Sets this instance's guarantee (same effect as `kvpager guarantee`); InvalidArgument when
  // the device's guarantees would sum above its budget.
  void set_guarantee(uint64_t bytes);
  // This instance's engine pools its share into the device budget (DeviceBudget::pool_share)
  // or takes it out again as it leaves, its guarantee with it (DeviceBudget::unpool_share);
  // each returns the new budget.
  uint64_t pool_budget_share(uint64_t share) {
    return device_.pool_share(slot_, self_, share,
                              parse_budget(config_.gpu_utilization, device_.total_bytes()));
  }
  uint64_t unpool_budget_share(uint64_t share) noexcept;
  // Adds to the instance segment's count of cached blocks its engine evicted under pressure
  // (`kvpager list --json`: evicted_blocks). Lock-free, no syscall.
  void count_evicted_blocks(uint64_t blocks) noexcept {
    segment().evicted_blocks.fetch_add(blocks, std::memory_order_relaxed);
  }
  const std::string& name() const { return spec_.name; }
  const std::string& device() const { return spec_.device; }
  const std::string& path() const { return file_.path(); }
  uint32_t slot() const { return slot_; }
  DeviceBudget& device_budget() { return device_; }

 private:
  InstanceRegistration(RegistryConfig config, InstanceSpec spec, DeviceBudget device,
                       ProcessIdentity self, uint32_t slot, ShmFile file);
  format::InstanceSegment& segment() const {
    return *static_cast<format::InstanceSegment*>(file_.data());
  }

  RegistryConfig config_;
  InstanceSpec spec_;
  DeviceBudget device_;
  ProcessIdentity self_;
  uint32_t slot_;
  ShmFile file_;
  uint64_t pressure_at_join_ = 0;             // the device's pressure counter at create()
  std::atomic<uint64_t> own_raises_{0};       // pressure raises this instance made
  std::atomic<uint64_t> others_pressure_{0};  // pressure_from_others()' running maximum
  uint64_t seen_revision_ = 0;                // poll() thread only
  uint64_t seen_budget_revision_ = 0;
  uint64_t seen_others_pressure_ = 0;
};

}  // namespace kvpager::limits
