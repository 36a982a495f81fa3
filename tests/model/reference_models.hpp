#pragma once
// Published architecture numbers of the shipped models, written down independently of the
// YAML files and of the model library, and the sizing rules computed from them by hand. Tests
// compare the implementation (and the CLI) against these.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace kvpager::testing {

struct ReferenceModel {
  const char* stem;  // models/<stem>.yaml
  const char* name;
  uint64_t layers;
  bool mla;
  uint64_t kv_heads;         // GQA/MHA
  uint64_t head_dim;         // GQA/MHA
  uint64_t latent_and_rope;  // MLA
  uint64_t window;           // 0: no sliding layers; else every even layer (0, 2, ...) slides
};

inline const std::vector<ReferenceModel>& reference_models() {
  static const std::vector<ReferenceModel> models = {
      {"deepseek-r1", "DEEPSEEK_R1", 61, true, 0, 0, 512 + 64, 0},
      {"llama-3.1-8b", "LLAMA_3_1_8B", 32, false, 8, 128, 0, 0},
      {"llama-3.1-70b", "LLAMA_3_1_70B", 80, false, 8, 128, 0, 0},
      {"llama-3.1-405b", "LLAMA_3_1_405B", 126, false, 8, 128, 0, 0},
      {"qwen3-8b", "QWEN3_8B", 36, false, 8, 128, 0, 0},
      {"qwen3-235b-a22b", "QWEN3_235B_A22B", 94, false, 4, 128, 0, 0},
      {"gpt-oss-20b", "GPT_OSS_20B", 24, false, 8, 64, 0, 128},
      {"gpt-oss-120b", "GPT_OSS_120B", 36, false, 8, 64, 0, 128},
      {"mixtral-8x7b", "MIXTRAL_8X7B", 32, false, 8, 128, 0, 0},
      {"llama-2-7b", "LLAMA_2_7B", 32, false, 32, 128, 0, 0},
  };
  return models;
}

struct ReferenceConfig {
  uint64_t tp, pp, isl, num_requests, page_size, elem;
  bool block;
};

// Read with yaml-cpp directly (not through the model library).
inline ReferenceConfig read_reference_config(const std::string& file) {
  const YAML::Node y = YAML::LoadFile(file);
  ReferenceConfig c{};
  c.tp = y["strategy"]["tp_size"].as<uint64_t>();
  c.pp = y["strategy"]["pp_size"].as<uint64_t>();
  const std::string q = y["strategy"]["kvcache_quant_mode"].as<std::string>();
  c.elem = (q == "fp8" || q == "int8") ? 1 : 2;
  c.isl = y["runtime"]["isl"].as<uint64_t>();
  c.num_requests = y["runtime"]["num_requests"].as<uint64_t>();
  c.page_size = y["system"]["page_size"].as<uint64_t>();
  c.block = y["system"]["access_pattern"].as<std::string>() == "block";
  return c;
}

struct ReferenceNumbers {
  uint64_t io_per_token;  // iosize
  uint64_t block;         // max_block_size
  uint64_t batch;         // max_batch_size
};

inline ReferenceNumbers reference_numbers(const ReferenceModel& m, const ReferenceConfig& c) {
  // One layer, one token, whole model and one GPU.
  const uint64_t layer_all =
      m.mla ? m.latent_and_rope * c.elem : 2 * m.kv_heads * m.head_dim * c.elem;
  uint64_t heads_gpu = m.kv_heads / c.tp + (m.kv_heads % c.tp ? 1 : 0);
  if (heads_gpu == 0) heads_gpu = 1;
  const uint64_t layer_gpu = m.mla ? layer_all : 2 * heads_gpu * m.head_dim * c.elem;
  const uint64_t stage_layers = (m.layers + c.pp - 1) / c.pp;
  ReferenceNumbers r{};
  r.io_per_token = c.block ? layer_gpu * stage_layers : layer_gpu;
  r.block = r.io_per_token * c.page_size;
  uint64_t isl_bytes = 0;
  for (uint64_t l = 0; l < m.layers; ++l) {
    const bool sliding = m.window > 0 && l % 2 == 0;
    isl_bytes += layer_all * (sliding ? std::min(c.isl, m.window) : c.isl);
  }
  const unsigned __int128 want = static_cast<unsigned __int128>(isl_bytes) * c.num_requests;
  r.batch = static_cast<uint64_t>((want + r.block - 1) / r.block);
  return r;
}

}  // namespace kvpager::testing
