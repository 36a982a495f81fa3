#pragma once
// KV-cache sizing and transfer geometry: bytes per token, IO size per GPU for each access
// pattern and TP/PP split, the nixlbench block (max_block_size) and batch (max_batch_size).
// Pure functions of (architecture, config); exact integer arithmetic; thread-safe.
//
//   element bytes      kvcache_quant_mode: fp8/int8 -> 1, fp16/bf16/bfloat16 -> 2, fp32 -> 4
//   token, one layer   MHA/GQA: 2 (K and V) x kv_heads x head_dim x bytes;
//                      MLA: (latent + rope) x bytes (one latent, no V)
//   per GPU (TP)       GQA/MHA: ceil(kv_heads / tp) heads, at least 1 (replicated when tp >
//                      kv_heads); MLA: the latent is not split, every rank holds all of it
//   IO per token       layer access: one layer; block access: ceil(num_layers / pp) layers
//                      (whole layers: the busiest pipeline stage's share)
//   block              IO per token x page_size                         (max_block_size)
//   batch              ceil(KV bytes of isl tokens x num_requests / block) (max_batch_size)
//                      where KV bytes of n tokens sums, over all layers of the whole model,
//                      per-layer bytes x n (x min(n, window) for a sliding-window layer)
#include <cstdint>
#include <string_view>

#include "kvpager/model/architecture.hpp"
#include "kvpager/model/model_config.hpp"

namespace kvpager::model {

// Throws InvalidArgument naming the mode when it is unknown.
uint32_t kv_element_bytes(std::string_view kvcache_quant_mode);

// The KV shape one TP rank stores per token per layer; the core's KV geometry can be built
// from it (components x heads x head_dim x element bytes = bytes).
struct RankKvShape {
  uint32_t components = 2;  // 2 (K, V) for MHA/GQA; 1 (latent) for MLA
  uint32_t heads = 0;       // KV heads on this rank; 1 for MLA
  uint32_t head_dim = 0;    // head width; latent + rope for MLA
  uint32_t element_bytes = 1;
  uint64_t bytes() const { return uint64_t{components} * heads * head_dim * element_bytes; }
};
RankKvShape rank_kv_shape(const ModelArchitecture& arch, uint32_t tp_size, uint32_t element_bytes);

// Whole model (all heads), one token, one layer.
uint64_t kv_bytes_per_token_per_layer(const ModelArchitecture& arch, uint32_t element_bytes);
// Whole model, one token, all layers.
uint64_t kv_bytes_per_token(const ModelArchitecture& arch, uint32_t element_bytes);
// Whole model, `tokens` tokens of one request, all layers, sliding windows applied.
uint64_t kv_bytes_for_tokens(const ModelArchitecture& arch, uint32_t element_bytes,
                             uint64_t tokens);
// ceil(num_layers / pp), whole layers (1 when pp exceeds num_layers: the stages past the last
// layer hold none). Throws InvalidArgument when pp is 0.
uint32_t layers_per_stage(const ModelArchitecture& arch, uint32_t pp_size);

struct TransferGeometry {
  uint32_t element_bytes = 0;
  uint32_t layers_per_stage = 0;
  uint32_t kv_heads_per_rank = 0;
  uint64_t kv_bytes_per_token = 0;  // whole model
  uint64_t io_bytes_per_token = 0;  // per GPU, per access (the `iosize` figure)
  uint64_t block_bytes = 0;         // io_bytes_per_token x page_size (max_block_size)
  uint64_t isl_kv_bytes = 0;        // whole model, isl tokens of one request
  uint64_t batch_size = 0;          // max_batch_size
};

// Validates `config` (config.validate) and computes the geometry for `arch`.
TransferGeometry transfer_geometry(const ModelArchitecture& arch, const ModelConfig& config);

}  // namespace kvpager::model
