#pragma once
// KvCacheHandle: what Python's kvpager.KvCache holds. It builds a backend (or, for a
// tensor-parallel scheduler, a tp::TpPageStore over the ranks' channels) and a kv::KvCache
// from keyword options (explicit options beat KVPAGER_* environment variables, which beat the
// defaults documented in kv_cache.hpp and backend.hpp), and makes typed views of its tensors.
//
// Ownership: the handle holds one shared reference to the cache; close() drops it. Views and
// DLPack tensors hold their own references, so memory is released when the handle is closed
// (or collected) and the last view is gone.
// Thread safety: the cache itself is thread-safe. The handle's reference is only read or reset
// by binding code holding the GIL, which serialises close() against every other call.
// Errors: calls after close(), or in a forked child (abandon_after_fork), throw StateError;
// everything else is kv::KvCache's contract.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dtype.hpp"
#include "kv_shape.hpp"
#include "kv_tensor.hpp"
#include "kvpager/kv/kv_cache.hpp"
#include "kvpager/limits/instance_registration.hpp"

namespace kvpager::python {

struct KvCacheOptions : KvShape {
  std::optional<uint64_t> limit_bytes;  // mapped-memory limit, 0 = none
  std::optional<size_t> reserve_pages;
  std::optional<size_t> max_idle_pages;
  std::optional<bool> zero_fill;  // back unmapped pages with a zero page
  // Registers the cache in the shared-memory registry under this name (kvpager list/top/limit
  // see it; its limit and the device budget apply). KVPAGER_SHM_* configure the registry.
  std::optional<std::string> instance;
  std::string model;  // free text shown by kvpager list/top
  // With `instance`: the share of the device budget guaranteed to it (kvpager guarantee).
  std::optional<uint64_t> guarantee_bytes;
  // With `instance`: pooled into the device budget on joining, before the guarantee is set
  // (checked against a budget that holds this share) and before the first page (the null
  // block's) is mapped, so that a cache starting beside others that hold the budget so far
  // maps it within its own share. Taken out again if the construction fails; afterwards the
  // owner takes it out (unpool_budget_share) when it leaves.
  std::optional<uint64_t> pool_share_bytes;
  // Tensor parallelism, scheduler side: with tp_size > 0 the cache holds no memory here; it
  // maps each page on the tp_size rank servers listening on `tp_token`'s channels
  // (tp::TpPageStore). Geometry is one rank's shard; backend/device name rank 0's device (the
  // budget and registry entry are charged there), no backend or CUDA context is created.
  std::optional<std::string> tp_token;
  int tp_size = 0;
};

class KvCacheHandle {
 public:
  explicit KvCacheHandle(const KvCacheOptions& options);

  // The cache; throws StateError after close().
  kv::KvCache& cache() const;
  std::shared_ptr<kv::KvCache> shared() const;
  void close() {
    if (forked_from_ != 0) {
      return;  // a forked child's copy: nothing of it may be torn down here (abandon_after_fork)
    }
    cache_.reset();
    registration_.reset();
  }
  // Called in the child right after fork(): the cache belongs to the parent (its background
  // threads do not exist here, a mutex they held stays locked, its registry entry and pages
  // are the parent's). The child's copy is abandoned: its references are leaked so that no
  // destructor runs in the child (views dropped there cannot run it either), and every later
  // call raises StateError saying so.
  void abandon_after_fork(long parent_pid);
  bool forked() const { return forked_from_ != 0; }
  bool closed() const { return cache_ == nullptr; }

  const DType& dtype() const { return *dtype_; }
  DLDevice device() const { return device_; }
  const std::string& backend_description() const { return backend_description_; }
  const kv::KvGeometry& geometry() const { return geometry_; }
  kv::KvLayout layout() const { return layout_; }
  uint64_t num_blocks() const { return num_blocks_; }

  // The natural view of one layer's K (component 0), V (1) or latent (0) tensor:
  // shape (num_blocks, block_size, kv_heads, head_dim), strides in elements of dtype();
  // the block stride is the whole all-layer cell for the interleaved layout.
  KvTensor tensor(uint32_t layer, uint32_t component) const;
  // Any view of the cache's virtual space, byte_offset from its start (see KvTensor::make).
  KvTensor view(uint64_t byte_offset, std::vector<int64_t> shape, std::vector<int64_t> strides,
                const DType& dtype) const;
  // Byte offset of a tensor from the start of the space (the base of view()).
  uint64_t tensor_offset(uint32_t layer, uint32_t component) const;
  // Bytes between consecutive blocks of one tensor.
  uint64_t block_stride_bytes() const;

  // The registry entry of a cache built with `instance`; StateError without one.
  limits::InstanceRegistration& registration() const;

 private:
  KvRegion region() const;

  std::shared_ptr<kv::KvCache> cache_;
  std::shared_ptr<limits::InstanceRegistration> registration_;  // with `instance` only
  long forked_from_ = 0;  // the parent's pid in a forked child's copy
  const DType* dtype_ = nullptr;
  DLDevice device_{kDLCPU, 0};
  std::string backend_description_;
  kv::KvGeometry geometry_;
  kv::KvLayout layout_ = kv::KvLayout::kInterleaved;
  uint64_t num_blocks_ = 0;
};

}  // namespace kvpager::python
