#pragma once
// KV geometry of one model instance (one rank): how many bytes a block of tokens takes in each
// layer, for K and V (MHA/GQA) or for one latent buffer (MLA).
#include <cstdint>
#include <string>

namespace kvpager::kv {

enum class KvKind {
  kKeyValue,  // separate K and V tensors (MHA, GQA, MQA)
  kLatent,    // one compressed latent per token (MLA): kv_heads = 1, head_dim = latent width
};

// Where layers live in virtual memory.
enum class KvLayout {
  // One virtual tensor per layer and per K/V; a logical page maps one handle in each of them
  // (2 x num_layers handles per page for K/V).
  kPerLayer,
  // One virtual region; a block is a cell [layer][K/V][block_size][heads][head_dim] holding all
  // layers, so a logical page is one handle and mapping it is one map + one set-access.
  kInterleaved,
};

struct KvGeometry {
  uint32_t num_layers = 0;
  uint32_t kv_heads = 0;
  uint32_t head_dim = 0;
  uint32_t dtype_bytes = 2;
  uint32_t block_size = 16;  // tokens per block
  KvKind kind = KvKind::kKeyValue;

  uint32_t components() const { return kind == KvKind::kLatent ? 1 : 2; }
  // Bytes of one token in one layer and one component (K, V or latent).
  uint64_t token_bytes() const { return uint64_t{kv_heads} * head_dim * dtype_bytes; }
  // Bytes of one block in one layer and one component.
  uint64_t block_bytes() const { return token_bytes() * block_size; }
  // Bytes of one block across all layers and components.
  uint64_t block_bytes_all_layers() const { return block_bytes() * components() * num_layers; }

  // Throws InvalidArgument naming the field when a value is zero or out of range.
  void validate() const;
  std::string describe() const;
};

KvLayout parse_layout(const std::string& name);  // "per-layer" | "interleaved"
const char* layout_name(KvLayout layout);

}  // namespace kvpager::kv
