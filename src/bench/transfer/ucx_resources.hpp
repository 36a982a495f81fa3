#pragma once
// RAII owners of the UCX (ucp) objects the UCX engine uses, each throwing DriverError naming
// the ucp call and the ucs status on failure. Internal to the transfer engine. A worker and
// everything made from it belong to one thread at a time.
#include <ucp/api/ucp.h>

#include <cstdint>
#include <string>

#include "kvpager/bench/transfer/segment.hpp"

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

// Memory UCX allocates and registers for RMA (ucp_mem_map with ALLOCATE). UCX places it
// where its transports reach it best: on one host, a shared-memory segment a peer maps, so a
// put is one memcpy with no syscall and no work at the target (as in ucx_perftest). Touched
// (zeroed) up front; a Segment for the check pattern.
class UcxBuffer final : public Segment {
 public:
  UcxBuffer(const UcxContext& context, uint64_t bytes);
  ~UcxBuffer() override;
  UcxBuffer(const UcxBuffer&) = delete;
  UcxBuffer& operator=(const UcxBuffer&) = delete;
  std::string packed_rkey() const;
  std::byte* data() const { return data_; }

  uint64_t size() const override { return size_; }
  void fill(uint64_t offset, uint64_t bytes, uint64_t pattern_offset, uint64_t seed) override;
  void clear(uint64_t offset, uint64_t bytes) override;
  uint64_t mismatches(uint64_t offset, uint64_t bytes, uint64_t pattern_offset,
                      uint64_t seed) override;

 private:
  ucp_context_h context_;
  ucp_mem_h memh_ = nullptr;
  std::byte* data_ = nullptr;
  uint64_t size_ = 0;
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
