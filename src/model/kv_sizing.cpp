#include "kvpager/model/kv_sizing.hpp"

#include <algorithm>
#include <string>

#include "kvpager/common/error.hpp"

namespace kvpager::model {

namespace {

// Sizes that do not fit 64 bits are refused: before, they wrapped to wrong figures (or 0, and a
// division by it) printed with exit 0.
uint64_t checked_mul(uint64_t a, uint64_t b, const char* what) {
  uint64_t out = 0;
  if (__builtin_mul_overflow(a, b, &out)) {
    throw InvalidArgument(std::string(what) + " overflows 64 bits (" + std::to_string(a) + " x " +
                          std::to_string(b) + ")");
  }
  return out;
}

uint64_t checked_add(uint64_t a, uint64_t b, const char* what) {
  uint64_t out = 0;
  if (__builtin_add_overflow(a, b, &out)) {
    throw InvalidArgument(std::string(what) + " overflows 64 bits");
  }
  return out;
}

}  // namespace

uint32_t kv_element_bytes(std::string_view mode) {
  if (mode == "fp8" || mode == "int8") return 1;
  if (mode == "fp16" || mode == "bfloat16" || mode == "bf16") return 2;
  if (mode == "fp32") return 4;
  throw InvalidArgument("unknown KV cache precision '" + std::string(mode) +
                        "' (expected fp8, int8, fp16, bfloat16, bf16 or fp32)");
}

RankKvShape rank_kv_shape(const ModelArchitecture& arch, uint32_t tp, uint32_t element_bytes) {
  if (tp == 0) throw InvalidArgument("tp_size must be positive");
  RankKvShape s;
  s.element_bytes = element_bytes;
  if (arch.attention == AttentionKind::kMLA) {
    s.components = 1;
    s.heads = 1;  // the latent is shared by all heads and is not split across TP ranks
    s.head_dim = arch.mla_latent_dimension + arch.mla_rope_dimension;
  } else {
    s.components = 2;
    s.heads = std::max<uint32_t>(1, (arch.num_kv_heads + tp - 1) / tp);
    s.head_dim = arch.head_dimension;
  }
  return s;
}

uint64_t kv_bytes_per_token_per_layer(const ModelArchitecture& arch, uint32_t element_bytes) {
  return rank_kv_shape(arch, 1, element_bytes).bytes();
}

uint64_t kv_bytes_per_token(const ModelArchitecture& arch, uint32_t element_bytes) {
  return kv_bytes_per_token_per_layer(arch, element_bytes) * arch.num_layers;
}

uint64_t kv_bytes_for_tokens(const ModelArchitecture& arch, uint32_t element_bytes,
                             uint64_t tokens) {
  const uint64_t per_layer = kv_bytes_per_token_per_layer(arch, element_bytes);
  uint64_t total = 0;
  for (LayerKind kind : arch.layers) {
    const uint64_t kept =
        kind == LayerKind::kSliding ? std::min<uint64_t>(tokens, arch.sliding_window) : tokens;
    total = checked_add(total, checked_mul(per_layer, kept, "the KV bytes of the tokens"),
                        "the KV bytes of the tokens");
  }
  return total;
}

uint32_t layers_per_stage(const ModelArchitecture& arch, uint32_t pp) {
  if (pp == 0) throw InvalidArgument("pp_size must be positive");
  // The busiest stage's share, in whole layers; with more stages than layers it holds one and
  // the stages past the last layer hold none.
  return (arch.num_layers + pp - 1) / pp;
}

TransferGeometry transfer_geometry(const ModelArchitecture& arch, const ModelConfig& config) {
  config.validate();
  TransferGeometry g;
  g.element_bytes = kv_element_bytes(config.strategy.kvcache_quant_mode);
  g.layers_per_stage = layers_per_stage(arch, config.strategy.pp_size);
  const RankKvShape shape = rank_kv_shape(arch, config.strategy.tp_size, g.element_bytes);
  g.kv_heads_per_rank = shape.heads;
  g.kv_bytes_per_token = kv_bytes_per_token(arch, g.element_bytes);
  const uint64_t layers =
      config.system.access_pattern == AccessPattern::kBlock ? g.layers_per_stage : 1;
  g.io_bytes_per_token = shape.bytes() * layers;
  g.block_bytes = checked_mul(g.io_bytes_per_token, config.system.page_size,
                              "page_size times the IO bytes per token");
  g.isl_kv_bytes = kv_bytes_for_tokens(arch, g.element_bytes, config.runtime.isl);
  const unsigned __int128 wanted =
      static_cast<unsigned __int128>(g.isl_kv_bytes) * config.runtime.num_requests;
  const unsigned __int128 batch = (wanted + g.block_bytes - 1) / g.block_bytes;
  if (batch > UINT64_MAX) throw InvalidArgument("batch size overflows 64 bits");
  g.batch_size = static_cast<uint64_t>(batch);
  return g;
}

}  // namespace kvpager::model
