#include "kvpager/kv/kv_geometry.hpp"

#include "kvpager/common/error.hpp"

namespace kvpager::kv {

void KvGeometry::validate() const {
  auto need = [](uint64_t v, const char* field) {
    if (v == 0) throw InvalidArgument(std::string("KV geometry: ") + field + " must be positive");
  };
  need(num_layers, "num_layers");
  need(kv_heads, "kv_heads");
  need(head_dim, "head_dim");
  need(block_size, "block_size");
  if (dtype_bytes != 1 && dtype_bytes != 2 && dtype_bytes != 4) {
    throw InvalidArgument("KV geometry: dtype_bytes must be 1, 2 or 4, got " +
                          std::to_string(dtype_bytes));
  }
  if (kind == KvKind::kLatent && kv_heads != 1) {
    throw InvalidArgument("KV geometry: a latent (MLA) cache has kv_heads = 1");
  }
}

std::string KvGeometry::describe() const {
  return std::to_string(num_layers) + " layers, " +
         (kind == KvKind::kLatent
              ? "latent " + std::to_string(head_dim)
              : std::to_string(kv_heads) + " KV heads x " + std::to_string(head_dim)) +
         ", " + std::to_string(dtype_bytes) + " B/elem, block " + std::to_string(block_size) +
         " tokens";
}

KvLayout parse_layout(const std::string& name) {
  if (name == "per-layer" || name == "per_layer" || name == "layer") return KvLayout::kPerLayer;
  if (name == "interleaved" || name == "contiguous") return KvLayout::kInterleaved;
  throw InvalidArgument("unknown KV layout '" + name + "' (choose per-layer or interleaved)");
}

const char* layout_name(KvLayout layout) {
  return layout == KvLayout::kPerLayer ? "per-layer" : "interleaved";
}

}  // namespace kvpager::kv
