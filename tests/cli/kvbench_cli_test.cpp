// kvpager kvbench plan|kvcache|iosize: the seed's examples verbatim, every shipped model and
// config against independently computed numbers, and bad input.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <map>

#include "cli/kvbench_run.hpp"
#include "model/reference_models.hpp"

using kvpager::testing::lines_of;
using kvpager::testing::run_kvpager;
using kvpager::testing::RunResult;

namespace {

std::string models_dir() {
  return kvpager::testing::source_dir_path() + "/models";
}

// The seed README's plans, plus the line current NIXL KVBench adds (configure_buffer_size):
// --total_buffer_size = max_batch_size x max_block_size, so nixlbench takes the batch.
const char* kSeedBlockPp16 =
    "================================================================================\n"
    "Model Config: ./examples/block-tp1-pp16.yaml\n"
    "ISL: 10000 tokens\n"
    "Page Size: 256\n"
    "Requests: 10\n"
    "TP: 1\n"
    "PP: 16\n"
    "================================================================================\n"
    "nixlbench \\\n"
    "    --backend GDS \\\n"
    "    --max_batch_size 5958 \\\n"
    "    --max_block_size 589824 \\\n"
    "    --start_batch_size 5958 \\\n"
    "    --start_block_size 589824 \\\n"
    "    --target_seg_type VRAM \\\n"
    "    --total_buffer_size 3514171392\n";  // 5958 x 589824

const char* kSeedLayerPp16 =
    "================================================================================\n"
    "Model Config: ./examples/layer-tp1-pp16.yaml\n"
    "ISL: 10000 tokens\n"
    "Page Size: 256\n"
    "Requests: 10\n"
    "TP: 1\n"
    "PP: 16\n"
    "================================================================================\n"
    "nixlbench \\\n"
    "    --backend GDS \\\n"
    "    --max_batch_size 23829 \\\n"
    "    --max_block_size 147456 \\\n"
    "    --start_batch_size 23829 \\\n"
    "    --start_block_size 147456 \\\n"
    "    --target_seg_type VRAM \\\n"
    "    --total_buffer_size 3513729024\n";  // 23829 x 147456

const char* kSeedOverride =
    "================================================================================\n"
    "Model Config: ./examples/block-tp1-pp8.yaml\n"
    "ISL: 10000 tokens\n"
    "Page Size: 256\n"
    "Requests: 100\n"
    "TP: 1\n"
    "PP: 32\n"
    "================================================================================\n"
    "nixlbench \\\n"
    "    --backend GDS \\\n"
    "    --max_batch_size 119141 \\\n"
    "    --max_block_size 294912 \\\n"
    "    --start_batch_size 119141 \\\n"
    "    --start_block_size 294912 \\\n"
    "    --target_seg_type VRAM \\\n"
    "    --total_buffer_size 35136110592\n";  // 119141 x 294912

// kvbench's size format, written out here: largest 1024 power, two decimals, trailing zeros
// dropped down to one.
std::string expected_size(uint64_t bytes) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int p = 0;
  double v = static_cast<double>(bytes);
  while (p < 4 && v >= 1024) v /= 1024, ++p;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  std::string s = buf;
  if (s.size() > 3 && s.substr(s.size() - 1) == "0") s.pop_back();
  return s + " " + units[p];
}

void expect_usage_error(const RunResult& r, const std::string& needle) {
  EXPECT_EQ(r.rc, 2) << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(lines_of(r.err).size(), 1u) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
}

}  // namespace

TEST(KvbenchCli, SeedPlanExamplesVerbatim) {
  const std::vector<std::string> common{
      "--backend", "GDS", "--source", "gpu", "--etcd-endpoint", "http://localhost:2379"};
  auto plan = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"kvbench", "plan"});
    args.insert(args.end(), common.begin(), common.end());
    return run_kvpager(args, models_dir());
  };
  RunResult r = plan({"--model", "./examples/model_deepseek_r1.yaml", "--model_config",
                      "./examples/block-tp1-pp16.yaml"});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, kSeedBlockPp16);
  r = plan({"--model", "./examples/model_deepseek_r1.yaml", "--model_config",
            "./examples/layer-tp1-pp16.yaml"});
  EXPECT_EQ(r.out, kSeedLayerPp16);
  r = plan({"--model", "./examples/model_deepseek_r1.yaml", "--model_config",
            "./examples/block-tp1-pp8.yaml", "--pp", "32", "--num_requests", "100"});
  EXPECT_EQ(r.out, kSeedOverride);
  // The catalogue's own DeepSeek-R1 file gives the same plan.
  r = plan({"--model", "deepseek-r1", "--model_config", "./examples/block-tp1-pp16.yaml"});
  EXPECT_EQ(r.out, kSeedBlockPp16);
}

TEST(KvbenchCli, SeedKvcacheAndIosizeVerbatim) {
  RunResult r = run_kvpager({"kvbench", "kvcache", "--model", "./examples/model_deepseek_r1.yaml",
                             "--model_config", "./examples/block-tp1-pp8.yaml"},
                            models_dir());
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out,
            "Model                  : DEEPSEEK_R1\n"
            "Input Sequence Length  : 10000\n"
            "Batch Size             : 298\n"
            "IO Size                : 1.12 MB\n");
  r = run_kvpager({"kvbench", "iosize", "--model", "./examples/model_deepseek_r1.yaml",
                   "--model_config", "./examples/block-tp1-pp8.yaml"},
                  models_dir());
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "IO Size per GPU: 4608\n");
}

TEST(KvbenchCli, EveryCommandOnEveryShippedModelAndConfig) {
  const std::string glob = models_dir() + "/examples/*-tp*.yaml";
  for (const auto& ref : kvpager::testing::reference_models()) {
    SCOPED_TRACE(ref.stem);
    // plan --format json: one object per config with every flag.
    RunResult r = run_kvpager(
        {"kvbench", "plan", "--model", ref.stem, "--model_configs", glob, "--format", "json"});
    ASSERT_EQ(r.rc, 0) << r.err;
    const auto plans = nlohmann::json::parse(r.out);
    ASSERT_GE(plans.size(), 6u);
    std::map<std::string, kvpager::testing::ReferenceNumbers> want;
    for (const auto& p : plans) {
      const std::string file = p.at("config_file");
      const auto n =
          kvpager::testing::reference_numbers(ref, kvpager::testing::read_reference_config(file));
      want[file] = n;
      EXPECT_EQ(p.at("max_block_size"), n.block) << file;
      EXPECT_EQ(p.at("start_block_size"), n.block) << file;
      EXPECT_EQ(p.at("max_batch_size"), n.batch) << file;
      EXPECT_EQ(p.at("start_batch_size"), n.batch) << file;
      // pairwise, one device a side, one thread: nixlbench takes a buffer of one batch
      EXPECT_EQ(p.at("total_buffer_size"), n.batch * n.block) << file;
      for (const char* flag : {"backend",
                               "check_consistency",
                               "device_list",
                               "enable_pt",
                               "etcd_endpoints",
                               "storage_enable_direct",
                               "gds_filepath",
                               "enable_vmm",
                               "initiator_seg_type",
                               "mode",
                               "num_initiator_dev",
                               "num_iter",
                               "num_target_dev",
                               "num_threads",
                               "op_type",
                               "runtime_type",
                               "scheme",
                               "target_seg_type",
                               "total_buffer_size",
                               "warmup_iter",
                               "worker_type"}) {
        EXPECT_TRUE(p.contains(flag)) << flag;
      }
    }
    // kvcache: a block per config.
    r = run_kvpager({"kvbench", "kvcache", "--model", ref.stem, "--model_configs", glob});
    ASSERT_EQ(r.rc, 0) << r.err;
    std::string file;
    size_t blocks = 0;
    for (const auto& line : lines_of(r.out)) {
      if (line.rfind("Model Config           : ", 0) == 0) file = line.substr(25), ++blocks;
      if (line.rfind("Model                  : ", 0) == 0) {
        EXPECT_EQ(line.substr(25), ref.name);
      }
      if (line.rfind("Batch Size             : ", 0) == 0) {
        EXPECT_EQ(line.substr(25), std::to_string(want.at(file).batch)) << file;
      }
      if (line.rfind("IO Size                : ", 0) == 0) {
        EXPECT_EQ(line.substr(25), expected_size(want.at(file).block)) << file;
      }
    }
    EXPECT_EQ(blocks, want.size());
    // iosize.
    r = run_kvpager({"kvbench", "iosize", "--model", ref.stem, "--model_configs", glob});
    ASSERT_EQ(r.rc, 0) << r.err;
    blocks = 0;
    for (const auto& line : lines_of(r.out)) {
      if (line.rfind("Model Config: ", 0) == 0) file = line.substr(14), ++blocks;
      if (line.rfind("IO Size per GPU: ", 0) == 0) {
        EXPECT_EQ(line.substr(17), std::to_string(want.at(file).io_per_token)) << file;
      }
    }
    EXPECT_EQ(blocks, want.size());
  }
}

TEST(KvbenchCli, PlanTextCsvAndSchemes) {
  const std::string cfg = models_dir() + "/examples/block-tp8-pp1.yaml";
  RunResult r = run_kvpager({"kvbench", "plan", "--model", "llama-3.1-70b", "--model_config", cfg,
                             "--scheme", "tp", "--source", "gpu", "--destination", "memory"});
  ASSERT_EQ(r.rc, 0) << r.err;
  // 70B, tp 8: one KV head per GPU, 80 layers, fp8: 2*1*128*80 = 20480 B/token, page 16.
  EXPECT_NE(r.out.find("    --initiator_seg_type VRAM \\\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("    --max_block_size 327680 \\\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("    --num_target_dev 8 \\\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("    --scheme tp \\\n"), std::string::npos) << r.out;
  // Batch: 80 x 2 x 8 x 128 B x 8192 tokens x 16 requests / 327680 = 65536 blocks. nixlbench
  // checks a batch against total / num_target_dev: 8 batches.
  EXPECT_NE(r.out.find("    --total_buffer_size " + std::to_string(65536ull * 327680 * 8) + "\n"),
            std::string::npos)
      << r.out;
  r = run_kvpager(
      {"kvbench", "plan", "--model", "llama-3.1-70b", "--model_config", cfg, "--format", "csv"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto rows = lines_of(r.out);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].rfind("backend,check_consistency,config_file,", 0), 0u) << rows[0];
  EXPECT_NE(rows[0].find("max_batch_size"), std::string::npos);
  EXPECT_NE(rows[0].find("model_strategy_tp_size"), std::string::npos);
}

TEST(KvbenchCli, BadInputIsOneLineAndExitCode2) {
  const std::string cfg = models_dir() + "/examples/block-tp1-pp8.yaml";
  expect_usage_error(run_kvpager({"kvbench", "plan", "--model", "gpt-7", "--model_config", cfg}),
                     "--model gpt-7: unknown model");
  expect_usage_error(run_kvpager({"kvbench", "kvcache", "--model", "llama-3.1-8b", "--model_config",
                                  "/nonexistent/c.yaml"}),
                     "/nonexistent/c.yaml: cannot read");
  expect_usage_error(run_kvpager({"kvbench", "iosize", "--model", "gpt-oss-20b", "--model_config",
                                  cfg, "--page_size", "0"}),
                     "--page_size 0: must be a positive integer");
  expect_usage_error(run_kvpager({"kvbench", "iosize", "--model", "gpt-oss-20b", "--model_config",
                                  cfg, "--isl", "-4"}),
                     "--isl -4: must be a positive integer");
  // sizes past 64 bits: a SIGFPE (block bytes wrapped to 0) and wrong figures with exit 0 before
  expect_usage_error(run_kvpager({"kvbench", "kvcache", "--model", "llama-3.1-8b", "--model_config",
                                  cfg, "--page_size", "2251799813685248"}),
                     "overflows 64 bits");
  expect_usage_error(run_kvpager({"kvbench", "iosize", "--model", "llama-3.1-8b", "--model_config",
                                  cfg, "--page_size", "2251799813685249"}),
                     "overflows 64 bits");
  expect_usage_error(run_kvpager({"kvbench", "kvcache", "--model", "llama-3.1-8b", "--model_config",
                                  cfg, "--isl", "281474976710656"}),
                     "overflows 64 bits");
  expect_usage_error(run_kvpager({"kvbench", "plan", "--model", "gpt-oss-20b", "--model_config",
                                  cfg, "--max_block_size", "-1"}),
                     "--max_block_size -1");
  expect_usage_error(run_kvpager({"kvbench", "plan", "--model", "gpt-oss-20b", "--model_config",
                                  cfg, "--num_iter", "0"}),
                     "--num_iter 0: must be a positive integer");
  expect_usage_error(run_kvpager({"kvbench", "plan", "--model", "gpt-oss-20b", "--model_configs",
                                  models_dir() + "/examples/nothing*.yaml"}),
                     "no file matches");
  // A bad file among good ones: nothing is printed.
  char tpl[] = "/tmp/kvbench_bad_XXXXXX";
  const int fd = ::mkstemp(tpl);
  const std::string bad =
      "strategy: {tp_size: 1, pp_size: 2, kvcache_quant_mode: fp8}\n"
      "runtime: {isl: lots, num_requests: 1}\n"
      "system: {page_size: 16, access_pattern: block}\n";
  ASSERT_EQ(::write(fd, bad.data(), bad.size()), static_cast<ssize_t>(bad.size()));
  ::close(fd);
  expect_usage_error(run_kvpager({"kvbench", "plan", "--model", "qwen3-8b", "--model_config", cfg,
                                  "--model_configs", tpl}),
                     std::string(tpl) + ": runtime.isl: expected a positive integer, got 'lots'");
  ::unlink(tpl);
  const std::string broken = models_dir() + "/README.md";  // not YAML mapping
  expect_usage_error(run_kvpager({"kvbench", "plan", "--model", broken, "--model_config", cfg}),
                     "README.md");
}

TEST(KvbenchCli, PlanSizesTheBufferSoNixlbenchTakesTheBatch) {
  const std::vector<std::string> seed{"kvbench",        "plan",
                                      "--model",        "./examples/model_deepseek_r1.yaml",
                                      "--model_config", "./examples/block-tp1-pp8.yaml",
                                      "--pp",           "32",
                                      "--num_requests", "100",
                                      "--backend",      "GDS",
                                      "--source",       "gpu",
                                      "--format",       "json"};
  auto plan = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = seed;
    args.insert(args.end(), extra.begin(), extra.end());
    return run_kvpager(args, models_dir());
  };
  // Left out: one batch, 119141 x 294912 B (35 GB; the 8 GiB default would be refused).
  RunResult r = plan({});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)[0].at("total_buffer_size"), 119141ull * 294912);
  // Two threads: nixlbench checks total / num_threads.
  r = plan({"--num_threads", "2"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)[0].at("total_buffer_size"), 2 * 119141ull * 294912);
  // A user's size that holds the batch is kept.
  r = plan({"--total_buffer_size", "64G"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)[0].at("total_buffer_size"), 64ull << 30);
  // One nixlbench would refuse is an error naming the size that fits.
  expect_usage_error(plan({"--total_buffer_size", "8G"}),
                     "--total_buffer_size 8589934592: nixlbench refuses it for this plan (a "
                     "batch of 119141 blocks of 294912 B");
  expect_usage_error(plan({"--total_buffer_size", "8G"}), "give 35136110592 or more");
  expect_usage_error(plan({"--total_buffer_size", "35136110593", "--num_threads", "2"}),
                     "give 70272221184 or a larger multiple of 2");
}

TEST(KvbenchCli, NixlKvbenchFilesAndPipelinesLongerThanTheModel) {
  const std::string nixl = models_dir() + "/examples/nixl";
  // Every Llama file NIXL KVBench ships used to fail: num_query_heads_with_mha: unknown field.
  RunResult r = run_kvpager({"kvbench", "kvcache", "--model", nixl + "/model_llama_3_1_8b.yaml",
                             "--model_config", nixl + "/block-tp1-pp1.yaml"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out,
            "Model                  : LLAMA3.1_8B\n"
            "Input Sequence Length  : 1000\n"
            "Batch Size             : 625\n"
            "IO Size                : 1.0 MB\n");
  // gpt-oss-20b has 24 layers; pp 25 puts one on the busiest stage: 2 x 8 x 64 B.
  r = run_kvpager({"kvbench", "iosize", "--model", "gpt-oss-20b", "--model_config",
                   models_dir() + "/examples/block-tp1-pp8.yaml", "--pp", "25"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "IO Size per GPU: 1024\n");
}

TEST(KvbenchCli, DuplicateKeyIsOneLineNamingKeyAndFile) {
  char tpl[] = "/tmp/kvbench_dup_XXXXXX";
  const int fd = ::mkstemp(tpl);
  const std::string text =
      "model_name: X\nnum_layers: 32\nnum_query_heads: 8\nhead_dimension: 64\n"
      "num_layers: 64\n";
  ASSERT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  ::close(fd);
  expect_usage_error(
      run_kvpager({"kvbench", "iosize", "--model", tpl, "--model_config",
                   models_dir() + "/examples/block-tp1-pp8.yaml"}),
      std::string(tpl) + ":5: num_layers: duplicate key (first given on line 2); keep one");
  ::unlink(tpl);
}
