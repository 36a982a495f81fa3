// Bad model and config files: one message naming the file and the field.
#include <gtest/gtest.h>

#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <string>

#include "kvpager/common/error.hpp"
#include "kvpager/model/architecture.hpp"
#include "kvpager/model/model_config.hpp"

using namespace kvpager;
using namespace kvpager::model;
namespace fs = std::filesystem;

namespace {

class YamlErrors : public ::testing::Test {
 protected:
  fs::path dir_ = fs::temp_directory_path() / ("kvpager_yaml_" + std::to_string(::getpid()));
  void SetUp() override { fs::create_directories(dir_); }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path write(const std::string& name, const std::string& text) {
    const fs::path p = dir_ / name;
    std::ofstream(p) << text;
    return p;
  }

  template <class F>
  std::string error_of(F&& f) {
    try {
      f();
    } catch (const InvalidArgument& e) {
      return e.what();
    }
    return "(no error)";
  }
};

const char* kGoodConfig =
    "strategy: {tp_size: 1, pp_size: 2, kvcache_quant_mode: fp8}\n"
    "runtime: {isl: 100, osl: 1, num_requests: 1}\n"
    "system: {page_size: 16, access_pattern: block}\n";

}  // namespace

TEST_F(YamlErrors, MissingFile) {
  const std::string e = error_of([&] { load_model_config(dir_ / "none.yaml"); });
  EXPECT_NE(e.find("none.yaml: cannot read"), std::string::npos) << e;
}

TEST_F(YamlErrors, MalformedYamlNamesLine) {
  const auto p = write("bad.yaml", "strategy: {tp_size: 1\nruntime: [\n");
  const std::string e = error_of([&] { load_model_config(p); });
  EXPECT_NE(e.find("bad.yaml:"), std::string::npos) << e;
  EXPECT_NE(e.find("malformed YAML"), std::string::npos) << e;
}

TEST_F(YamlErrors, WrongTypeNamesField) {
  auto p = write("c.yaml", std::string(kGoodConfig) + "");
  EXPECT_NO_THROW(load_model_config(p));
  p = write(
      "c1.yaml",
      "strategy: {tp_size: one, pp_size: 2, kvcache_quant_mode: fp8}\n"
      "runtime: {isl: 100, num_requests: 1}\nsystem: {page_size: 16, access_pattern: block}\n");
  std::string e = error_of([&] { load_model_config(p); });
  EXPECT_NE(e.find("c1.yaml: strategy.tp_size: expected a positive integer, got 'one'"),
            std::string::npos)
      << e;
  p = write(
      "c2.yaml",
      "strategy: {tp_size: 1, pp_size: 2, kvcache_quant_mode: fp8}\n"
      "runtime: {isl: [1, 2], num_requests: 1}\nsystem: {page_size: 16, access_pattern: block}\n");
  e = error_of([&] { load_model_config(p); });
  EXPECT_NE(e.find("runtime.isl"), std::string::npos) << e;
  p = write("c3.yaml",
            "strategy: {tp_size: 1, pp_size: 2, kvcache_quant_mode: fp8}\n"
            "runtime: {isl: 0, num_requests: 1}\nsystem: {page_size: 16, access_pattern: block}\n");
  e = error_of([&] { load_model_config(p); });
  EXPECT_NE(e.find("runtime.isl: expected a positive integer, got '0'"), std::string::npos) << e;
  p = write("c4.yaml",
            "strategy: {tp_size: 1, pp_size: 2, kvcache_quant_mode: fp7}\n"
            "runtime: {isl: 1, num_requests: 1}\nsystem: {page_size: 16, access_pattern: block}\n");
  e = error_of([&] { load_model_config(p); });
  EXPECT_NE(e.find("strategy.kvcache_quant_mode"), std::string::npos) << e;
  p = write(
      "c5.yaml",
      "strategy: {tp_size: 1, pp_size: 2, kvcache_quant_mode: fp8}\n"
      "runtime: {isl: 1, num_requests: 1}\nsystem: {page_size: 16, access_pattern: diagonal}\n");
  e = error_of([&] { load_model_config(p); });
  EXPECT_NE(e.find("system.access_pattern"), std::string::npos) << e;
}

TEST_F(YamlErrors, MissingAndUnknownFields) {
  auto p = write("m.yaml",
                 "strategy: {tp_size: 1, kvcache_quant_mode: fp8}\n"
                 "runtime: {isl: 1, num_requests: 1}\n"
                 "system: {page_size: 16, access_pattern: block}\n");
  std::string e = error_of([&] { load_model_config(p); });
  EXPECT_NE(e.find("m.yaml: strategy.pp_size: missing"), std::string::npos) << e;
  p = write("u.yaml", std::string(kGoodConfig) + "extra: 1\n");
  e = error_of([&] { load_model_config(p); });
  EXPECT_NE(e.find("u.yaml: extra: unknown field"), std::string::npos) << e;
}

TEST_F(YamlErrors, ArchitectureFiles) {
  auto p = write("a.yaml",
                 "model_name: X\nnum_layers: 4\nnum_query_heads: 8\nnum_kv_heads: 3\n"
                 "head_dimension: 64\n");
  std::string e = error_of([&] { load_architecture(p); });
  EXPECT_NE(e.find("a.yaml: num_kv_heads: 3 does not divide num_query_heads 8"), std::string::npos)
      << e;
  p = write("b.yaml", "model_name: X\nattention: MLA\nnum_layers: 4\nnum_query_heads: 8\n");
  e = error_of([&] { load_architecture(p); });
  EXPECT_NE(e.find("b.yaml: mla_latent_dimension: missing"), std::string::npos) << e;
  p = write("c.yaml",
            "model_name: X\nnum_layers: 4\nnum_query_heads: 8\nhead_dimension: 64\n"
            "layer_types: [full, sliding]\n");
  e = error_of([&] { load_architecture(p); });
  EXPECT_NE(e.find("c.yaml: sliding_window: missing"), std::string::npos) << e;
  p = write("d.yaml", "model_name: X\nnum_layers: four\nnum_query_heads: 8\n");
  e = error_of([&] { load_architecture(p); });
  EXPECT_NE(e.find("d.yaml: num_layers: expected a positive integer, got 'four'"),
            std::string::npos)
      << e;
  p = write("e.yaml", "model_name: X\nnum_layers: 4\nnum_query_heads: 8\nhead_dim: 64\n");
  e = error_of([&] { load_architecture(p); });
  EXPECT_NE(e.find("e.yaml: head_dim: unknown field"), std::string::npos) << e;
  // MHA implied; three kinds of layer list.
  p = write("f.yaml",
            "model_name: X\nnum_layers: 6\nnum_query_heads: 8\nhead_dimension: 64\n"
            "sliding_window: 32\nlayer_types: [sliding, sliding, full]\n");
  const ModelArchitecture a = load_architecture(p);
  EXPECT_EQ(a.attention, AttentionKind::kMHA);
  EXPECT_EQ(a.num_kv_heads, 8u);
  EXPECT_EQ(a.layers[2], LayerKind::kFull);
  EXPECT_EQ(a.layers[3], LayerKind::kSliding);
  EXPECT_EQ(a.layers[5], LayerKind::kFull);
}

TEST_F(YamlErrors, NixlKvbenchLlamaSchemaGivesTheGqaGroup) {
  // NIXL KVBench's Llama files: query heads under num_query_heads_with_mha and the GQA group
  // (query heads per KV head) instead of num_kv_heads.
  auto p = write("llama.yaml",
                 "model_name: 'LLAMA3.1_70B'\nnum_layers: 80\nnum_query_heads_with_mha: 64\n"
                 "query_head_dimension: 128\ngqa_num_queries_in_group: 8\n"
                 "num_model_params: 70000000000\n");
  const ModelArchitecture a = load_architecture(p);
  EXPECT_EQ(a.name, "LLAMA3.1_70B");
  EXPECT_EQ(a.attention, AttentionKind::kGQA);
  EXPECT_EQ(a.num_query_heads, 64u);
  EXPECT_EQ(a.num_kv_heads, 8u);
  EXPECT_EQ(a.head_dimension, 128u);
  // A group of 1 is multi-head attention.
  p = write("mha.yaml",
            "model_name: X\nnum_layers: 2\nnum_query_heads_with_mha: 8\n"
            "query_head_dimension: 64\ngqa_num_queries_in_group: 1\n");
  EXPECT_EQ(load_architecture(p).attention, AttentionKind::kMHA);
  p = write("g.yaml",
            "model_name: X\nnum_layers: 2\nnum_query_heads_with_mha: 60\n"
            "query_head_dimension: 64\ngqa_num_queries_in_group: 8\n");
  std::string e = error_of([&] { load_architecture(p); });
  EXPECT_NE(e.find("g.yaml: gqa_num_queries_in_group: 8 does not divide "
                   "num_query_heads_with_mha 60"),
            std::string::npos)
      << e;
  p = write("h.yaml",
            "model_name: X\nnum_layers: 2\nnum_query_heads: 64\nnum_kv_heads: 8\n"
            "query_head_dimension: 64\ngqa_num_queries_in_group: 4\n");
  e = error_of([&] { load_architecture(p); });
  EXPECT_NE(e.find("h.yaml: gqa_num_queries_in_group: given with num_kv_heads; give one"),
            std::string::npos)
      << e;
}

TEST_F(YamlErrors, OneFieldUnderBothSpellingsIsRefused) {
  // They could disagree, and one would silently win.
  auto p = write("a.yaml",
                 "model_name: X\nnum_layers: 2\nnum_query_heads: 8\nnum_query_heads_with_mha: 16\n"
                 "head_dimension: 64\n");
  std::string e = error_of([&] { load_architecture(p); });
  EXPECT_NE(e.find("a.yaml: num_query_heads_with_mha: the same field as num_query_heads; give "
                   "one of them"),
            std::string::npos)
      << e;
  p = write("b.yaml",
            "model_name: X\nmodel: Y\nnum_layers: 2\nnum_query_heads: 8\nhead_dimension: 64\n");
  e = error_of([&] { load_architecture(p); });
  EXPECT_NE(e.find("b.yaml: model: the same field as model_name"), std::string::npos) << e;
  p = write("c.yaml",
            "model_name: X\nnum_layers: 2\nnum_query_heads: 8\nhead_dimension: 64\n"
            "query_head_dimension: 128\n");
  e = error_of([&] { load_architecture(p); });
  EXPECT_NE(e.find("c.yaml: query_head_dimension: the same field as head_dimension"),
            std::string::npos)
      << e;
  p = write("d.yaml",
            "model_name: X\nnum_layers: 2\nnum_query_heads: 8\nmla_latent_dimension: 512\n"
            "mla_latent_vector_dimension: 512\n");
  e = error_of([&] { load_architecture(p); });
  EXPECT_NE(e.find("d.yaml: mla_latent_vector_dimension: the same field as mla_latent_dimension"),
            std::string::npos)
      << e;
}

TEST_F(YamlErrors, DuplicateKeysAreRefusedNamingKeyAndLine) {
  // yaml-cpp keeps the first of two equal keys; the second used to be dropped without a word.
  auto p = write("m.yaml",
                 "model_name: X\nnum_layers: 32\nnum_query_heads: 8\nhead_dimension: 64\n"
                 "num_layers: 64\n");
  std::string e = error_of([&] { load_architecture(p); });
  EXPECT_NE(e.find("m.yaml:5: num_layers: duplicate key (first given on line 2)"),
            std::string::npos)
      << e;
  p = write("c.yaml",
            "strategy:\n  tp_size: 1\n  pp_size: 2\n  kvcache_quant_mode: fp8\n  pp_size: 4\n"
            "runtime: {isl: 100, num_requests: 1}\n"
            "system: {page_size: 16, access_pattern: block}\n");
  e = error_of([&] { load_model_config(p); });
  EXPECT_NE(e.find("c.yaml:5: strategy.pp_size: duplicate key (first given on line 3)"),
            std::string::npos)
      << e;
  p = write("s.yaml", std::string(kGoodConfig) + "runtime: {isl: 200, num_requests: 1}\n");
  e = error_of([&] { load_model_config(p); });
  EXPECT_NE(e.find("s.yaml:4: runtime: duplicate key (first given on line 2)"), std::string::npos)
      << e;
  // Equal keys in different mappings are not duplicates.
  p = write("ok.yaml",
            "strategy: {tp_size: 1, pp_size: 2, kvcache_quant_mode: fp8}\n"
            "runtime: {isl: 100, osl: 1, num_requests: 1}\n"
            "system: {page_size: 16, access_pattern: block, source: memory, "
            "destination: memory}\n");
  EXPECT_NO_THROW(load_model_config(p));
}
