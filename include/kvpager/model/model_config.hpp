#pragma once
// A deployment of a model (kvbench's --model_config file): parallelism and precision
// (`strategy`), the workload (`runtime`) and the serving system (`system`). CLI overrides
// (--pp, --tp, --isl, ...) are applied on top and remembered, so an error names where the bad
// value came from. Plain value type; copyable; no shared state.
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "kvpager/model/architecture.hpp"

namespace kvpager::model {

enum class AccessPattern {
  kBlock,  // one IO moves a page of all layers of this GPU's pipeline stage
  kLayer,  // one IO moves a page of one layer
};

struct ModelConfig {
  std::filesystem::path source;  // the YAML file (empty when built in code)

  struct Strategy {
    uint32_t tp_size = 1;
    uint32_t pp_size = 1;
    std::string model_quant_mode = "fp8";
    std::string kvcache_quant_mode = "fp8";  // fp8 | int8 (1 byte), fp16 | bfloat16 | bf16 (2)
  } strategy;

  struct Runtime {
    uint64_t isl = 0;  // input sequence length (tokens)
    uint64_t osl = 0;  // output sequence length (tokens)
    uint64_t num_requests = 1;
  } runtime;

  struct System {
    std::string hardware;    // informative, e.g. "H100"
    std::string backend;     // serving engine, e.g. "SGLANG" (not the transfer backend)
    uint64_t page_size = 0;  // tokens per KV page
    AccessPattern access_pattern = AccessPattern::kBlock;
    std::optional<std::string> source;       // file | memory | gpu (nixlbench descriptors)
    std::optional<std::string> destination;  // file | memory | gpu
  } system;

  // Where each field's value came from ("<file>" or "--pp"), keyed by "strategy.pp_size" etc.
  std::map<std::string, std::string> origin;

  // "<origin>: <field> = <value>" for error messages.
  std::string where(const std::string& field) const;

  // Throws InvalidArgument naming field and origin for a zero size or an unknown precision. A
  // pp_size above a model's layer count is accepted (as NIXL KVBench does): the stages past
  // the last layer hold none.
  void validate() const;
};

const char* access_pattern_name(AccessPattern pattern);  // "block" | "layer"
AccessPattern parse_access_pattern(const std::string& text, const std::string& where);

// The CLI override group (--pp --tp --isl --osl --num_requests --page_size --access_pattern).
struct ConfigOverrides {
  std::optional<int64_t> pp, tp, isl, osl, num_requests, page_size;
  std::optional<std::string> access_pattern;
};

// Throws InvalidArgument naming the flag for a zero or negative value.
void apply_overrides(ModelConfig& config, const ConfigOverrides& overrides);

// Reads a model config file; same error promises as load_architecture.
ModelConfig load_model_config(const std::filesystem::path& file);

}  // namespace kvpager::model
