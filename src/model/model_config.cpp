#include "kvpager/model/model_config.hpp"

#include <set>

#include "kvpager/common/error.hpp"
#include "kvpager/model/kv_sizing.hpp"
#include "yaml_fields.hpp"

namespace kvpager::model {

namespace {

void reject_unknown(const detail::YamlFile& yaml, const YAML::Node& node, const std::string& prefix,
                    const std::set<std::string>& known) {
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    if (known.count(key)) continue;
    std::string list;
    for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
    yaml.fail(prefix.empty() ? key : prefix + "." + key, "unknown field (known: " + list + ")");
  }
}

std::string value_of(const ModelConfig& c, const std::string& field) {
  if (field == "strategy.tp_size") return std::to_string(c.strategy.tp_size);
  if (field == "strategy.pp_size") return std::to_string(c.strategy.pp_size);
  if (field == "strategy.kvcache_quant_mode") return c.strategy.kvcache_quant_mode;
  if (field == "runtime.isl") return std::to_string(c.runtime.isl);
  if (field == "runtime.num_requests") return std::to_string(c.runtime.num_requests);
  if (field == "system.page_size") return std::to_string(c.system.page_size);
  return "?";
}

}  // namespace

const char* access_pattern_name(AccessPattern pattern) {
  return pattern == AccessPattern::kBlock ? "block" : "layer";
}

AccessPattern parse_access_pattern(const std::string& text, const std::string& where) {
  if (text == "block") return AccessPattern::kBlock;
  if (text == "layer") return AccessPattern::kLayer;
  throw InvalidArgument(where + ": expected 'block' or 'layer', got '" + text + "'");
}

std::string ModelConfig::where(const std::string& field) const {
  auto it = origin.find(field);
  const std::string from = it != origin.end() ? it->second : source.string();
  return (from.empty() ? std::string("model config") : from) + ": " + field + " = " +
         value_of(*this, field);
}

void ModelConfig::validate() const {
  auto fail = [&](const std::string& field, const std::string& problem) {
    throw InvalidArgument(where(field) + ": " + problem);
  };
  if (strategy.tp_size == 0) fail("strategy.tp_size", "must be positive");
  if (strategy.pp_size == 0) fail("strategy.pp_size", "must be positive");
  if (runtime.isl == 0) fail("runtime.isl", "must be positive");
  if (runtime.num_requests == 0) fail("runtime.num_requests", "must be positive");
  if (system.page_size == 0) fail("system.page_size", "must be positive");
  try {
    kv_element_bytes(strategy.kvcache_quant_mode);
  } catch (const InvalidArgument& e) {
    fail("strategy.kvcache_quant_mode", e.what());
  }
}

void apply_overrides(ModelConfig& c, const ConfigOverrides& o) {
  auto positive = [](const std::optional<int64_t>& v, const char* flag) -> uint64_t {
    if (*v <= 0) {
      throw InvalidArgument(std::string(flag) + " " + std::to_string(*v) +
                            ": must be a positive integer");
    }
    return static_cast<uint64_t>(*v);
  };
  auto positive32 = [&](const std::optional<int64_t>& v, const char* flag) -> uint32_t {
    const uint64_t x = positive(v, flag);
    if (x > UINT32_MAX) throw InvalidArgument(std::string(flag) + ": too large");
    return static_cast<uint32_t>(x);
  };
  if (o.pp) c.strategy.pp_size = positive32(o.pp, "--pp"), c.origin["strategy.pp_size"] = "--pp";
  if (o.tp) c.strategy.tp_size = positive32(o.tp, "--tp"), c.origin["strategy.tp_size"] = "--tp";
  if (o.isl) c.runtime.isl = positive(o.isl, "--isl"), c.origin["runtime.isl"] = "--isl";
  if (o.osl) c.runtime.osl = positive(o.osl, "--osl"), c.origin["runtime.osl"] = "--osl";
  if (o.num_requests) {
    c.runtime.num_requests = positive(o.num_requests, "--num_requests");
    c.origin["runtime.num_requests"] = "--num_requests";
  }
  if (o.page_size) {
    c.system.page_size = positive(o.page_size, "--page_size");
    c.origin["system.page_size"] = "--page_size";
  }
  if (o.access_pattern) {
    c.system.access_pattern = parse_access_pattern(*o.access_pattern, "--access_pattern");
    c.origin["system.access_pattern"] = "--access_pattern";
  }
}

ModelConfig load_model_config(const std::filesystem::path& file) {
  detail::YamlFile yaml(file);
  reject_unknown(yaml, yaml.root(), "", {"strategy", "runtime", "system"});
  ModelConfig c;
  c.source = file;

  auto need = [&](const YAML::Node& node, const std::string& section, const std::string& key) {
    const std::string field = section + "." + key;
    auto v = yaml.positive(node, field, key);
    if (!v) yaml.fail(field, "missing");
    return *v;
  };
  auto need32 = [&](const YAML::Node& node, const std::string& section, const std::string& key) {
    const uint64_t v = need(node, section, key);
    if (v > UINT32_MAX) yaml.fail(section + "." + key, "too large");
    return static_cast<uint32_t>(v);
  };
  auto text = [&](const YAML::Node& node, const std::string& section, const std::string& key) {
    return yaml.text(node, section + "." + key, key);
  };

  const YAML::Node strategy = yaml.section("strategy", true);
  reject_unknown(yaml, strategy, "strategy",
                 {"tp_size", "pp_size", "model_quant_mode", "kvcache_quant_mode"});
  c.strategy.tp_size = need32(strategy, "strategy", "tp_size");
  c.strategy.pp_size = need32(strategy, "strategy", "pp_size");
  if (auto m = text(strategy, "strategy", "model_quant_mode")) c.strategy.model_quant_mode = *m;
  auto kvq = text(strategy, "strategy", "kvcache_quant_mode");
  if (!kvq) yaml.fail("strategy.kvcache_quant_mode", "missing");
  try {
    kv_element_bytes(*kvq);
  } catch (const InvalidArgument& e) {
    yaml.fail("strategy.kvcache_quant_mode", e.what());
  }
  c.strategy.kvcache_quant_mode = *kvq;

  const YAML::Node runtime = yaml.section("runtime", true);
  reject_unknown(yaml, runtime, "runtime", {"isl", "osl", "num_requests"});
  c.runtime.isl = need(runtime, "runtime", "isl");
  if (auto osl = yaml.positive(runtime, "runtime.osl", "osl")) c.runtime.osl = *osl;
  c.runtime.num_requests = need(runtime, "runtime", "num_requests");

  const YAML::Node system = yaml.section("system", true);
  reject_unknown(yaml, system, "system",
                 {"hardware", "backend", "page_size", "access_pattern", "source", "destination"});
  if (auto h = text(system, "system", "hardware")) c.system.hardware = *h;
  if (auto b = text(system, "system", "backend")) c.system.backend = *b;
  c.system.page_size = need(system, "system", "page_size");
  auto access = text(system, "system", "access_pattern");
  if (!access) yaml.fail("system.access_pattern", "missing");
  c.system.access_pattern =
      parse_access_pattern(*access, file.string() + ": system.access_pattern");
  for (const char* key : {"source", "destination"}) {
    auto v = text(system, "system", key);
    if (!v) continue;
    if (*v != "file" && *v != "memory" && *v != "gpu") {
      yaml.fail(std::string("system.") + key, "expected file, memory or gpu, got '" + *v + "'");
    }
    (std::string(key) == "source" ? c.system.source : c.system.destination) = *v;
  }
  return c;
}

}  // namespace kvpager::model
