#include "kvpager/model/architecture.hpp"

#include <algorithm>
#include <cctype>
#include <set>

#include "kvpager/common/error.hpp"
#include "yaml_fields.hpp"

namespace kvpager::model {

namespace {

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Keys a model file may use. NIXL KVBench's spellings (its examples/model_*.yaml) are accepted
// beside kvpager's: `model`, `query_head_dimension`, `mla_latent_vector_dimension`,
// `rope_mla_dimension`, and Llama's `num_query_heads_with_mha` + `gqa_num_queries_in_group`.
const std::set<std::string>& known_keys() {
  static const std::set<std::string> keys = {"model_name",
                                             "model",
                                             "num_layers",
                                             "attention",
                                             "num_query_heads",
                                             "num_query_heads_with_mha",
                                             "num_kv_heads",
                                             "gqa_num_queries_in_group",
                                             "head_dimension",
                                             "query_head_dimension",
                                             "embedding_dimension",
                                             "mla_latent_dimension",
                                             "mla_latent_vector_dimension",
                                             "mla_rope_dimension",
                                             "rope_mla_dimension",
                                             "num_model_params",
                                             "sliding_window",
                                             "layer_types",
                                             "description"};
  return keys;
}

}  // namespace

void ModelArchitecture::validate() const {
  const std::string where = (source.empty() ? "model " + name : source.string()) + ": ";
  auto fail = [&](const std::string& field, const std::string& problem) {
    throw InvalidArgument(where + field + ": " + problem);
  };
  if (name.empty()) fail("model_name", "missing");
  if (num_layers == 0) fail("num_layers", "must be a positive integer");
  if (num_query_heads == 0) fail("num_query_heads", "must be a positive integer");
  switch (attention) {
    case AttentionKind::kMHA:
      if (num_kv_heads != num_query_heads) {
        fail("num_kv_heads", "MHA needs one KV head per query head (" +
                                 std::to_string(num_query_heads) + "), got " +
                                 std::to_string(num_kv_heads) + "; use attention: GQA");
      }
      if (head_dimension == 0) fail("head_dimension", "missing (needed for MHA)");
      break;
    case AttentionKind::kGQA:
      if (num_kv_heads == 0) fail("num_kv_heads", "missing (needed for GQA)");
      if (num_kv_heads > num_query_heads || num_query_heads % num_kv_heads != 0) {
        fail("num_kv_heads", std::to_string(num_kv_heads) + " does not divide num_query_heads " +
                                 std::to_string(num_query_heads));
      }
      if (head_dimension == 0) fail("head_dimension", "missing (needed for GQA)");
      break;
    case AttentionKind::kMLA:
      if (mla_latent_dimension == 0) fail("mla_latent_dimension", "missing (needed for MLA)");
      break;
  }
  if (layers.size() != num_layers) {
    fail("layer_types", "describes " + std::to_string(layers.size()) + " layers, model has " +
                            std::to_string(num_layers));
  }
  const bool any_sliding = std::count(layers.begin(), layers.end(), LayerKind::kSliding) > 0;
  if (any_sliding && sliding_window == 0) {
    fail("sliding_window", "missing: layer_types has sliding layers");
  }
}

ModelArchitecture load_architecture(const std::filesystem::path& file) {
  detail::YamlFile yaml(file);
  const YAML::Node& root = yaml.root();
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    if (!known_keys().count(key)) {
      std::string list;
      for (const auto& k : known_keys()) list += (list.empty() ? "" : ", ") + k;
      yaml.fail(key, "unknown field (known: " + list + ")");
    }
  }
  auto positive = [&](const std::string& key) { return yaml.positive(root, key, key); };
  auto text = [&](const std::string& key) { return yaml.text(root, key, key); };
  auto require = [&](const std::string& key) -> uint32_t {
    auto v = positive(key);
    if (!v) yaml.fail(key, "missing");
    if (*v > UINT32_MAX) yaml.fail(key, "too large");
    return static_cast<uint32_t>(*v);
  };
  // One value under either of two spellings; both at once is refused (they could disagree).
  auto spelled = [&](const std::string& key, const std::string& alias) -> std::string {
    const bool has_key = root[key] && !root[key].IsNull();
    const bool has_alias = !alias.empty() && root[alias] && !root[alias].IsNull();
    if (has_key && has_alias) {
      yaml.fail(alias, "the same field as " + key + "; give one of them");
    }
    return has_alias ? alias : key;
  };
  auto optional32 = [&](const std::string& key, const std::string& alias) -> uint32_t {
    const std::string k = spelled(key, alias);
    auto v = positive(k);
    if (v && *v > UINT32_MAX) yaml.fail(k, "too large");
    return v ? static_cast<uint32_t>(*v) : 0;
  };

  ModelArchitecture a;
  a.source = file;
  const std::string name_key = spelled("model_name", "model");
  auto name = text(name_key);
  if (!name) yaml.fail("model_name", "missing");
  a.name = *name;
  a.num_layers = require("num_layers");
  const std::string heads_key = spelled("num_query_heads", "num_query_heads_with_mha");
  a.num_query_heads = require(heads_key);
  a.num_kv_heads = optional32("num_kv_heads", "");
  // KVBench's Llama files give the GQA group (query heads per KV head) instead of the KV heads.
  if (const uint32_t group = optional32("gqa_num_queries_in_group", ""); group > 0) {
    if (a.num_kv_heads > 0) {
      yaml.fail("gqa_num_queries_in_group",
                "given with num_kv_heads; give one of them (num_kv_heads = " + heads_key +
                    " / gqa_num_queries_in_group)");
    }
    if (a.num_query_heads % group != 0) {
      yaml.fail("gqa_num_queries_in_group", std::to_string(group) + " does not divide " +
                                                heads_key + " " +
                                                std::to_string(a.num_query_heads));
    }
    a.num_kv_heads = a.num_query_heads / group;
  }
  a.head_dimension = optional32("head_dimension", "query_head_dimension");
  a.embedding_dimension = optional32("embedding_dimension", "");
  a.mla_latent_dimension = optional32("mla_latent_dimension", "mla_latent_vector_dimension");
  a.mla_rope_dimension = optional32("mla_rope_dimension", "rope_mla_dimension");
  a.sliding_window = optional32("sliding_window", "");
  if (auto p = positive("num_model_params")) a.num_model_params = *p;

  if (auto kind = text("attention")) {
    const std::string k = upper(*kind);
    if (k == "MHA")
      a.attention = AttentionKind::kMHA;
    else if (k == "GQA")
      a.attention = AttentionKind::kGQA;
    else if (k == "MLA")
      a.attention = AttentionKind::kMLA;
    else
      yaml.fail("attention", "expected MHA, GQA or MLA, got '" + *kind + "'");
  } else if (a.mla_latent_dimension > 0) {
    a.attention = AttentionKind::kMLA;
  } else if (a.num_kv_heads > 0 && a.num_kv_heads != a.num_query_heads) {
    a.attention = AttentionKind::kGQA;
  } else {
    a.attention = AttentionKind::kMHA;
  }
  if (a.attention == AttentionKind::kMHA && a.num_kv_heads == 0) a.num_kv_heads = a.num_query_heads;
  if (a.attention == AttentionKind::kMLA) a.num_kv_heads = 0;

  const YAML::Node types = root["layer_types"];
  if (types && !types.IsNull()) {
    if (!types.IsSequence() || types.size() == 0) {
      yaml.fail("layer_types", "expected a non-empty list of 'full' / 'sliding'");
    }
    std::vector<LayerKind> pattern;
    for (size_t i = 0; i < types.size(); ++i) {
      const std::string field = "layer_types[" + std::to_string(i) + "]";
      if (!types[i].IsScalar()) yaml.fail(field, "expected 'full' or 'sliding'");
      const std::string t = lower(types[i].Scalar());
      if (t == "full" || t == "full_attention")
        pattern.push_back(LayerKind::kFull);
      else if (t == "sliding" || t == "sliding_attention")
        pattern.push_back(LayerKind::kSliding);
      else
        yaml.fail(field, "expected 'full' or 'sliding', got '" + types[i].Scalar() + "'");
    }
    if (pattern.size() > a.num_layers) {
      yaml.fail("layer_types", "lists " + std::to_string(pattern.size()) +
                                   " layers, num_layers is " + std::to_string(a.num_layers));
    }
    // A shorter list is a pattern repeated over the layers (e.g. [sliding, full]).
    for (uint32_t l = 0; l < a.num_layers; ++l) a.layers.push_back(pattern[l % pattern.size()]);
  } else {
    a.layers.assign(a.num_layers, a.sliding_window > 0 ? LayerKind::kSliding : LayerKind::kFull);
  }
  a.validate();
  return a;
}

}  // namespace kvpager::model
