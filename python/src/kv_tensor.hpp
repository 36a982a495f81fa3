#pragma once
// KvTensor: a typed, strided view of a KV cache's virtual memory, the object kvpager hands to
// Python frameworks (DLPack, numpy's array interface, CUDA array interface).
//
// Ownership and lifetime: a view holds a shared reference to its KvCache (or TpRankServer: the
// owner of the virtual space), and so does every
// DLPack capsule (and through it every consumer tensor) made from it; the cache's virtual
// reservation and mapped pages live until the last of them is gone, even after the Python
// KvCache object was closed or shutdown_kvcached() ran.
// Memory: the view spans the whole virtual space, but only pages holding allocated blocks (and
// the null block) are backed. Touching any other block faults (SIGSEGV on the host backend, an
// illegal-address error on CUDA) unless the cache was built with zero_fill (reads then see zeros).
// Thread safety: immutable after construction; any thread may read it.
// Errors: make() throws InvalidArgument when the view would reach outside the cache's region.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dlpack.h"
#include "dtype.hpp"
#include "kvpager/kv/kv_cache.hpp"

namespace kvpager::python {

// The virtual region a view may cover, and who keeps it alive.
struct KvRegion {
  std::shared_ptr<const void> owner;
  DLDevice device{kDLCPU, 0};
  uintptr_t base = 0;
  uint64_t bytes = 0;
};

class KvTensor {
 public:
  // A view starting `byte_offset` bytes into the region with `shape` and `strides` (in
  // elements, non-negative; byte offset and every stride times the element size stay inside
  // the region). Throws InvalidArgument naming the offending value otherwise.
  static KvTensor make(const KvRegion& region, uint64_t byte_offset, std::vector<int64_t> shape,
                       std::vector<int64_t> strides, const DType& dtype);

  const std::shared_ptr<const void>& owner() const { return owner_; }
  DLDevice device() const { return device_; }
  uintptr_t data() const { return data_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  const std::vector<int64_t>& strides() const { return strides_; }
  const DType& dtype() const { return *dtype_; }
  // The same view with another dtype of the same element size (caller checks the size).
  KvTensor retyped(const DType& dtype) const;
  // "cpu" or "cuda:N".
  std::string device_name() const;

 private:
  KvTensor() = default;
  std::shared_ptr<const void> owner_;
  DLDevice device_{kDLCPU, 0};
  uintptr_t data_ = 0;
  std::vector<int64_t> shape_;
  std::vector<int64_t> strides_;
  const DType* dtype_ = nullptr;
};

// The natural view of one layer's K/V/latent tensor `view` in `region`: shape (num_blocks,
// block_size, kv_heads, head_dim), strides in elements of `dtype`.
KvTensor natural_tensor(const KvRegion& region, const kv::TensorView& view, const DType& dtype);

}  // namespace kvpager::python
