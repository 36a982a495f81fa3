#pragma once
// TpRankServerHandle: what Python's kvpager.TpRankServer holds: one tensor-parallel rank's KV
// space in this process (tp::RankServer), served to the scheduler-side KvCache that connects
// to its channel, and typed views of its tensors (as KvCacheHandle's, DLPack included).
//
// Ownership: one shared reference to the server; close() drops it. Views and DLPack tensors
// hold their own, so the memory and the serving thread live until the handle is closed and
// the last view is gone.
// Thread safety: the server is thread-safe; the handle's reference is read or reset under the
// GIL only. Errors: StateError after close(); the rest is tp::RankServer's.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dtype.hpp"
#include "kv_shape.hpp"
#include "kv_tensor.hpp"
#include "kvpager/tp/rank_server.hpp"

namespace kvpager::python {

// The shape is this rank's shard (kv_heads per rank); num_blocks is required (the scheduler's
// block count); handle_bytes defaults as KvCache's (16 interleaved cells a page); layout
// defaults to interleaved (KVPAGER_LAYOUT does not apply: the scheduler must agree).
struct TpRankServerOptions : KvShape {
  std::string token;  // the engine's channel token
  uint32_t rank = 0;
};

class TpRankServerHandle {
 public:
  explicit TpRankServerHandle(const TpRankServerOptions& options);

  tp::RankServer& server() const;
  void close() {
    if (forked_from_ == 0) server_.reset();
  }
  bool closed() const { return server_ == nullptr; }
  // In a child right after fork(): the server (its thread, its socket) is the parent's; the
  // child's reference is leaked so no destructor joins a thread that does not exist here, and
  // every later call raises StateError.
  void abandon_after_fork(long parent_pid);

  const DType& dtype() const { return *dtype_; }
  DLDevice device() const { return device_; }
  const kv::KvGeometry& geometry() const { return server().config().worker.geometry; }

  KvTensor tensor(uint32_t layer, uint32_t component) const;
  KvTensor view(uint64_t byte_offset, std::vector<int64_t> shape, std::vector<int64_t> strides,
                const DType& dtype) const;
  uint64_t tensor_offset(uint32_t layer, uint32_t component) const;
  uint64_t block_stride_bytes() const;
  // The pages holding any byte of blocks [first, first + count) in any tensor, ascending.
  std::vector<PageId> pages_of_blocks(uint64_t first, uint64_t count) const;

 private:
  KvRegion region() const;

  std::shared_ptr<tp::RankServer> server_;
  long forked_from_ = 0;  // the parent's pid in a forked child's copy
  const DType* dtype_ = nullptr;
  DLDevice device_{kDLCPU, 0};
};

}  // namespace kvpager::python
