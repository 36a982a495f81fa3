#pragma once
// RAII owners of the UCX (ucp) objects the UCX engine uses, each throwing DriverError naming
// the ucp call and the ucs status on failure. Internal to the transfer layer. A worker and
// everything made from it belong to one thread at a time.
#include <ucp/api/ucp.h>

#include <cstdint>
#include <string>

namespace kvpager::transfer::detail {

[[noreturn]] void throw_ucs(const char* call, ucs_status_t status, const std::string& context = {});

class UcxContext {
 public:
  explicit UcxContext(bool shared_by_threads);
  ~UcxContext();
  UcxContext(const UcxContext&) = delete;
  UcxContext& operator=(const UcxContext&) = delete;
  ucp_context_h get() const { return context_; }

 private:
  ucp_context_h context_ = nullptr;
};

class UcxWorker {
 public:
  explicit UcxWorker(const UcxContext& context);
  ~UcxWorker();
  UcxWorker(const UcxWorker&) = delete;
  UcxWorker& operator=(const UcxWorker&) = delete;
  ucp_worker_h get() const { return worker_; }
  std::string address() const;  // bytes to hand to a peer
  unsigned progress() { return ucp_worker_progress(worker_); }
  // Progresses until `request` (from a *_nbx call) completes; frees it; throws on error.
  void wait(void* request, const char* call);

 private:
  ucp_worker_h worker_ = nullptr;
};

// Registers [address, address + bytes) for RMA.
class UcxRegistration {
 public:
  UcxRegistration(const UcxContext& context, void* address, uint64_t bytes);
  ~UcxRegistration();
  UcxRegistration(const UcxRegistration&) = delete;
  UcxRegistration& operator=(const UcxRegistration&) = delete;
  std::string packed_rkey() const;

 private:
  ucp_context_h context_;
  ucp_mem_h memh_ = nullptr;
};

class UcxEndpoint {
 public:
  UcxEndpoint(UcxWorker& worker, const std::string& remote_address);
  ~UcxEndpoint();  // force-closes, progressing the worker until done
  UcxEndpoint(const UcxEndpoint&) = delete;
  UcxEndpoint& operator=(const UcxEndpoint&) = delete;
  ucp_ep_h get() const { return ep_; }

 private:
  UcxWorker& worker_;
  ucp_ep_h ep_ = nullptr;
};

class UcxRemoteKey {
 public:
  UcxRemoteKey(const UcxEndpoint& ep, const std::string& packed);
  ~UcxRemoteKey();
  UcxRemoteKey(const UcxRemoteKey&) = delete;
  UcxRemoteKey& operator=(const UcxRemoteKey&) = delete;
  ucp_rkey_h get() const { return rkey_; }

 private:
  ucp_rkey_h rkey_ = nullptr;
};

std::string to_hex(const std::string& bytes);
std::string from_hex(const std::string& hex);

}  // namespace kvpager::transfer::detail
