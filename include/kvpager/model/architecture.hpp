#pragma once
// A model architecture as the KV cache sees it: layer count, attention kind and the head shapes
// that decide how many bytes a token occupies. Loaded from one YAML file in models/ (see
// models/README.md for the schema); adding a model that uses an existing attention kind is one
// file. Plain value type: copyable, no shared state, safe to read from any thread.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace kvpager::model {

enum class AttentionKind {
  kMHA,  // multi-head: one K and one V head per query head
  kGQA,  // grouped-query: num_kv_heads K/V heads shared by groups of query heads
  kMLA,  // multi-head latent: one compressed latent (+ decoupled RoPE key) per token per layer
};

// How far back a layer attends. Layers of one model share head shapes; they differ in window.
enum class LayerKind {
  kFull,     // attends to every previous token: keeps KV for the whole sequence
  kSliding,  // attends to the last `sliding_window` tokens: keeps at most that many
};

struct ModelArchitecture {
  std::string name;              // model_name, e.g. "DEEPSEEK_R1"
  std::filesystem::path source;  // the YAML file it came from (empty when built in code)
  uint32_t num_layers = 0;
  AttentionKind attention = AttentionKind::kGQA;
  uint32_t num_query_heads = 0;
  uint32_t num_kv_heads = 0;    // MHA: == num_query_heads; GQA: fewer; MLA: unused (0)
  uint32_t head_dimension = 0;  // K/V head width (MHA/GQA); MLA: query head width (informative)
  uint32_t embedding_dimension = 0;
  uint32_t mla_latent_dimension = 0;  // MLA: kv_lora_rank (e.g. 512)
  uint32_t mla_rope_dimension = 0;    // MLA: decoupled RoPE key width (e.g. 64)
  uint64_t num_model_params = 0;      // informative
  uint32_t sliding_window = 0;        // tokens a kSliding layer keeps; 0 when there are none
  std::vector<LayerKind> layers;      // one entry per layer (size num_layers)

  // Throws InvalidArgument naming the file and field when the description is inconsistent
  // (zero counts, MLA without a latent, GQA heads not dividing query heads, sliding layers
  // without a window, ...).
  void validate() const;
};

// Reads a model file. Accepts NIXL KVBench's keys beside kvpager's (`model` for `model_name`,
// `query_head_dimension`, `rope_mla_dimension`, `mla_latent_vector_dimension`, and Llama's
// `num_query_heads_with_mha` with `gqa_num_queries_in_group`: num_kv_heads = heads / group);
// `attention` may be omitted when the heads imply it. Throws InvalidArgument with
// "<file>: <field>: <problem>" for a missing, unreadable or malformed file, a missing field, a
// field of the wrong type, an unknown or repeated key, or one field under both its spellings.
ModelArchitecture load_architecture(const std::filesystem::path& file);

}  // namespace kvpager::model
