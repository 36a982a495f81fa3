// The sizing math against independently computed numbers for every shipped model and config,
// and the seed's four examples.
#include "kvpager/model/kv_sizing.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "kvpager/common/error.hpp"
#include "kvpager/model/catalogue.hpp"
#include "model/reference_models.hpp"

using namespace kvpager;
using namespace kvpager::model;
namespace fs = std::filesystem;

namespace {

fs::path source_dir() {
  const char* dir = std::getenv("KVPAGER_SOURCE_DIR");
  return dir ? fs::path(dir) : fs::path(".");
}

std::vector<fs::path> example_configs() {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(source_dir() / "models" / "examples")) {
    if (!e.is_regular_file()) continue;                                  // examples/nixl/
    if (e.path().filename().string().rfind("model_", 0) == 0) continue;  // model files
    out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

ModelConfig with(const fs::path& file, ConfigOverrides o = {}) {
  ModelConfig c = load_model_config(file);
  apply_overrides(c, o);
  return c;
}

}  // namespace

TEST(KvSizing, SeedExamplesComeOutExactly) {
  const fs::path ex = source_dir() / "models" / "examples";
  const ModelArchitecture r1 = load_architecture(ex / "model_deepseek_r1.yaml");
  EXPECT_EQ(r1.attention, AttentionKind::kMLA);

  auto g = transfer_geometry(r1, with(ex / "block-tp1-pp16.yaml"));
  EXPECT_EQ(g.batch_size, 5958u);
  EXPECT_EQ(g.block_bytes, 589824u);
  g = transfer_geometry(r1, with(ex / "layer-tp1-pp16.yaml"));
  EXPECT_EQ(g.batch_size, 23829u);
  EXPECT_EQ(g.block_bytes, 147456u);
  ConfigOverrides o;
  o.pp = 32;
  o.num_requests = 100;
  g = transfer_geometry(r1, with(ex / "block-tp1-pp8.yaml", o));
  EXPECT_EQ(g.batch_size, 119141u);
  EXPECT_EQ(g.block_bytes, 294912u);
  g = transfer_geometry(r1, with(ex / "block-tp1-pp8.yaml"));
  EXPECT_EQ(g.batch_size, 298u);
  EXPECT_EQ(g.block_bytes, 1179648u);  // 1.12 MB
  EXPECT_EQ(g.io_bytes_per_token, 4608u);
}

TEST(KvSizing, EveryShippedModelAndConfigMatchesIndependentNumbers) {
  const auto configs = example_configs();
  ASSERT_GE(configs.size(), 6u);
  for (const auto& ref : kvpager::testing::reference_models()) {
    const ModelArchitecture arch =
        load_architecture(source_dir() / "models" / (std::string(ref.stem) + ".yaml"));
    EXPECT_EQ(arch.name, ref.name);
    EXPECT_EQ(arch.num_layers, ref.layers) << ref.stem;
    for (const auto& file : configs) {
      SCOPED_TRACE(std::string(ref.stem) + " x " + file.string());
      const auto want =
          kvpager::testing::reference_numbers(ref, kvpager::testing::read_reference_config(file));
      const auto got = transfer_geometry(arch, with(file));
      EXPECT_EQ(got.io_bytes_per_token, want.io_per_token);
      EXPECT_EQ(got.block_bytes, want.block);
      EXPECT_EQ(got.batch_size, want.batch);
    }
  }
}

TEST(KvSizing, TensorParallelSplitsGqaHeadsButNotTheMlaLatent) {
  const fs::path m = source_dir() / "models";
  const ModelArchitecture llama = load_architecture(m / "llama-3.1-70b.yaml");  // 8 KV heads
  EXPECT_EQ(rank_kv_shape(llama, 1, 2).heads, 8u);
  EXPECT_EQ(rank_kv_shape(llama, 4, 2).heads, 2u);
  EXPECT_EQ(rank_kv_shape(llama, 8, 2).heads, 1u);
  EXPECT_EQ(rank_kv_shape(llama, 16, 2).heads, 1u);  // replicated, never zero
  EXPECT_EQ(rank_kv_shape(llama, 3, 2).heads, 3u);   // the largest rank's share
  EXPECT_EQ(rank_kv_shape(llama, 8, 2).bytes(), 2u * 1 * 128 * 2);
  const ModelArchitecture r1 = load_architecture(m / "deepseek-r1.yaml");
  EXPECT_EQ(rank_kv_shape(r1, 8, 1).bytes(), 576u);
  EXPECT_EQ(rank_kv_shape(r1, 8, 1).components, 1u);
}

TEST(KvSizing, SlidingLayersKeepOnlyTheirWindow) {
  const ModelArchitecture oss = load_architecture(source_dir() / "models" / "gpt-oss-20b.yaml");
  ASSERT_EQ(oss.layers.size(), 24u);
  EXPECT_EQ(oss.layers[0], LayerKind::kSliding);
  EXPECT_EQ(oss.layers[1], LayerKind::kFull);
  const uint64_t per_layer = 2 * 8 * 64 * 2;
  EXPECT_EQ(kv_bytes_for_tokens(oss, 2, 100), per_layer * 24 * 100);
  EXPECT_EQ(kv_bytes_for_tokens(oss, 2, 1000), per_layer * (12 * 1000 + 12 * 128));
  EXPECT_EQ(kv_bytes_per_token(oss, 2), per_layer * 24);
}

TEST(KvSizing, PrecisionBytes) {
  EXPECT_EQ(kv_element_bytes("fp8"), 1u);
  EXPECT_EQ(kv_element_bytes("int8"), 1u);
  EXPECT_EQ(kv_element_bytes("fp16"), 2u);
  EXPECT_EQ(kv_element_bytes("bfloat16"), 2u);
  EXPECT_THROW(kv_element_bytes("fp4x"), InvalidArgument);
}

TEST(KvSizing, PipelineLongerThanTheModelPutsOneLayerOnItsBusiestStage) {
  // NIXL KVBench plans gpt-oss-20b (24 layers) at pp 32; the busiest stage holds one whole
  // layer and the stages past the 24th hold none (upstream's 24/32 = 0.75 layer is no stage).
  const fs::path ex = source_dir() / "models" / "examples";
  const ModelArchitecture oss = load_architecture(source_dir() / "models" / "gpt-oss-20b.yaml");
  EXPECT_EQ(layers_per_stage(oss, 24), 1u);
  EXPECT_EQ(layers_per_stage(oss, 25), 1u);
  EXPECT_EQ(layers_per_stage(oss, 32), 1u);
  EXPECT_EQ(layers_per_stage(oss, 23), 2u);
  ConfigOverrides o;
  o.pp = 32;
  const auto g = transfer_geometry(oss, with(ex / "block-tp1-pp8.yaml", o));
  EXPECT_EQ(g.layers_per_stage, 1u);
  EXPECT_EQ(g.io_bytes_per_token, 2u * 8 * 64 * 1);  // one layer, fp8
  EXPECT_THROW(layers_per_stage(oss, 0), InvalidArgument);
  o.pp = 0;
  EXPECT_THROW(with(ex / "block-tp1-pp8.yaml", o), InvalidArgument);
  o.pp = -3;
  EXPECT_THROW(with(ex / "block-tp1-pp8.yaml", o), InvalidArgument);
}

TEST(KvSizing, CatalogueFindsModelsByStemOrName) {
  const std::vector<fs::path> dirs{source_dir() / "models"};
  EXPECT_EQ(find_architecture("deepseek-r1", dirs).name, "DEEPSEEK_R1");
  EXPECT_EQ(find_architecture("LLAMA_3_1_8B", dirs).num_layers, 32u);
  EXPECT_EQ(find_architecture("Qwen3-235B-A22B", dirs).num_kv_heads, 4u);
  try {
    find_architecture("gpt-5", dirs);
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("unknown model"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("deepseek-r1"), std::string::npos);
  }
  EXPECT_EQ(catalogue_files(dirs).size(), kvpager::testing::reference_models().size());
}
