#pragma once
// KvShape: the options every Python object holding KV tensors takes alike (kvpager.KvCache,
// kvpager.TpRankServer): the per-rank geometry, the layout, the page size and the device, with
// their checks and KVPAGER_* fallbacks in one place.
// Errors: InvalidArgument naming the bad value.
#include <cstdint>
#include <optional>
#include <string>

#include "dtype.hpp"
#include "kvpager/kv/kv_geometry.hpp"
#include "kvpager/vmm/backend.hpp"

namespace kvpager::python {

struct KvShape {
  uint32_t num_layers = 0;
  uint32_t kv_heads = 0;
  uint32_t head_dim = 0;
  std::string dtype = "float16";
  uint32_t block_size = 16;
  uint64_t num_blocks = 0;               // 0: as many as the device memory holds (KvCache)
  std::string kind = "kv";               // "kv" (K and V: MHA/GQA/MQA) or "latent" (MLA)
  std::optional<std::string> layout;     // "interleaved" | "per-layer" (also with '_')
  std::optional<uint64_t> handle_bytes;  // page size
  std::optional<std::string> backend;    // "auto" | "host" | "cuda"
  std::optional<int> device;             // CUDA ordinal
  std::optional<uintptr_t> stream;       // unmapping waits for this CUstream's queued work

  // The validated geometry of `dtype` elements.
  kv::KvGeometry geometry(const DType& dtype) const;
  // `layout` parsed; `fallback` when not given.
  kv::KvLayout layout_or(kv::KvLayout fallback) const;
  // KVPAGER_BACKEND / KVPAGER_DEVICE, overridden by `backend` and `device`.
  vmm::BackendConfig backend_config() const;
};

}  // namespace kvpager::python
