#include "ucx_resources.hpp"

#include <cstring>

#include "kvpager/bench/transfer/xfer_layout.hpp"
#include "kvpager/common/error.hpp"
#include "kvpager/common/units.hpp"

namespace kvpager::transfer::detail {

void throw_ucs(const char* call, ucs_status_t status, const std::string& context) {
  throw DriverError(call, ucs_status_string(status), context);
}

UcxContext::UcxContext(bool shared_by_threads) {
  ucp_config_t* config = nullptr;
  ucs_status_t st = ucp_config_read(nullptr, nullptr, &config);
  if (st != UCS_OK) throw_ucs("ucp_config_read", st);
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
  params.features = UCP_FEATURE_RMA;
  params.mt_workers_shared = shared_by_threads ? 1 : 0;
  st = ucp_init(&params, config, &context_);
  ucp_config_release(config);
  if (st != UCS_OK) throw_ucs("ucp_init", st);
}

UcxContext::~UcxContext() {
  ucp_cleanup(context_);
}

UcxWorker::UcxWorker(const UcxContext& context) {
  ucp_worker_params_t params{};
  params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  params.thread_mode = UCS_THREAD_MODE_SINGLE;
  const ucs_status_t st = ucp_worker_create(context.get(), &params, &worker_);
  if (st != UCS_OK) throw_ucs("ucp_worker_create", st);
}

UcxWorker::~UcxWorker() {
  ucp_worker_destroy(worker_);
}

std::string UcxWorker::address() const {
  ucp_address_t* addr = nullptr;
  size_t len = 0;
  const ucs_status_t st = ucp_worker_get_address(worker_, &addr, &len);
  if (st != UCS_OK) throw_ucs("ucp_worker_get_address", st);
  std::string out(reinterpret_cast<const char*>(addr), len);
  ucp_worker_release_address(worker_, addr);
  return out;
}

void UcxWorker::wait(void* request, const char* call) {
  if (request == nullptr) return;
  if (UCS_PTR_IS_ERR(request)) throw_ucs(call, UCS_PTR_STATUS(request));
  ucs_status_t st;
  while ((st = ucp_request_check_status(request)) == UCS_INPROGRESS) ucp_worker_progress(worker_);
  ucp_request_free(request);
  if (st != UCS_OK) throw_ucs(call, st);
}

UcxBuffer::UcxBuffer(const UcxContext& context, uint64_t bytes)
    : context_(context.get()), size_(bytes) {
  ucp_mem_map_params_t params{};
  params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                      UCP_MEM_MAP_PARAM_FIELD_FLAGS;
  params.address = nullptr;
  params.length = bytes;
  params.flags = UCP_MEM_MAP_ALLOCATE;
  ucs_status_t st = ucp_mem_map(context_, &params, &memh_);
  if (st != UCS_OK) {
    throw_ucs("ucp_mem_map", st, format_size(bytes) + " buffer; lower --total_buffer_size");
  }
  ucp_mem_attr_t attr{};
  attr.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS | UCP_MEM_ATTR_FIELD_LENGTH;
  st = ucp_mem_query(memh_, &attr);
  if (st != UCS_OK || attr.length < bytes) {
    ucp_mem_unmap(context_, memh_);
    throw_ucs("ucp_mem_query", st == UCS_OK ? UCS_ERR_NO_MEMORY : st);
  }
  data_ = static_cast<std::byte*>(attr.address);
  std::memset(data_, 0, bytes);
}

UcxBuffer::~UcxBuffer() {
  ucp_mem_unmap(context_, memh_);
}

std::string UcxBuffer::packed_rkey() const {
  void* buf = nullptr;
  size_t len = 0;
  const ucs_status_t st = ucp_rkey_pack(context_, memh_, &buf, &len);
  if (st != UCS_OK) throw_ucs("ucp_rkey_pack", st);
  std::string out(static_cast<const char*>(buf), len);
  ucp_rkey_buffer_release(buf);
  return out;
}

void UcxBuffer::fill(uint64_t offset, uint64_t bytes, uint64_t pattern_offset, uint64_t seed) {
  fill_pattern(data_ + offset, bytes, pattern_offset, seed);
}

void UcxBuffer::clear(uint64_t offset, uint64_t bytes) {
  std::memset(data_ + offset, 0, bytes);
}

uint64_t UcxBuffer::mismatches(uint64_t offset, uint64_t bytes, uint64_t pattern_offset,
                               uint64_t seed) {
  return count_mismatches(data_ + offset, bytes, pattern_offset, seed);
}

UcxEndpoint::UcxEndpoint(UcxWorker& worker, const std::string& remote_address) : worker_(worker) {
  ucp_ep_params_t params{};
  params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
  params.address = reinterpret_cast<const ucp_address_t*>(remote_address.data());
  const ucs_status_t st = ucp_ep_create(worker.get(), &params, &ep_);
  if (st != UCS_OK) throw_ucs("ucp_ep_create", st);
}

UcxEndpoint::~UcxEndpoint() {
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  param.flags = UCP_EP_CLOSE_FLAG_FORCE;
  void* req = ucp_ep_close_nbx(ep_, &param);
  if (req == nullptr || UCS_PTR_IS_ERR(req)) return;
  while (ucp_request_check_status(req) == UCS_INPROGRESS) worker_.progress();
  ucp_request_free(req);
}

UcxRemoteKey::UcxRemoteKey(const UcxEndpoint& ep, const std::string& packed) {
  const ucs_status_t st = ucp_ep_rkey_unpack(ep.get(), packed.data(), &rkey_);
  if (st != UCS_OK) throw_ucs("ucp_ep_rkey_unpack", st);
}

UcxRemoteKey::~UcxRemoteKey() {
  ucp_rkey_destroy(rkey_);
}

std::string to_hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

std::string from_hex(const std::string& hex) {
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    throw InvalidArgument("bad hex digit in peer info");
  };
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out += static_cast<char>(nibble(hex[i]) << 4 | nibble(hex[i + 1]));
  }
  return out;
}

}  // namespace kvpager::transfer::detail
