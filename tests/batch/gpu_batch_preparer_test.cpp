// The GPU path against the CPU path (label gpu; skips without a CUDA device): identical
// metadata and block ids over random steps (with forks and exhaustion) for each way of running
// a step (fused kernel with the descriptor in its parameters, fused kernel after a descriptor
// copy, split update + pack, CUDA graph replay of the fused kernel); the CPU path's upload;
// bad input and exhaustion leave the GPU preparer unchanged.
#include "kvpager/batch/gpu_batch_preparer.hpp"

#include <gtest/gtest.h>

#include <vector>

#include "device_snapshot.hpp"
#include "invariants.hpp"
#include "kvpager/batch/block_table_manager.hpp"
#include "kvpager/batch/cpu_batch_preparer.hpp"
#include "kvpager/batch/cuda_resources.hpp"
#include "kvpager/batch/synthetic_workload.hpp"
#include "kvpager/common/error.hpp"
#include "random_steps.hpp"

using namespace kvpager;
using namespace kvpager::batch;
using namespace kvpager::batch::testing;

namespace {

class GpuBatch : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!gpu_kernels_built()) GTEST_SKIP() << "built without CUDA kernels";
    if (!cuda_device_present()) GTEST_SKIP() << "no CUDA device present";
  }
};

BatchConfig random_config(int32_t block_size, int32_t num_blocks) {
  BatchConfig c;
  c.block_size = block_size;
  c.num_blocks = num_blocks;
  c.max_seqs = 40;
  c.max_batch = 24;
  c.max_blocks_per_seq = block_size == 1 ? 160 : 10;
  c.max_tokens_per_step = 8 * std::max(block_size, 16);
  c.max_forks_per_step = 4;
  return c;
}

void expect_same_rows(const BlockTableManager& cpu, GpuBatchPreparer& gpu) {
  EXPECT_EQ(gpu.free_blocks(), cpu.free_blocks());
  for (int32_t s = 0; s < cpu.config().max_seqs; ++s) {
    ASSERT_EQ(gpu.length(s), cpu.length(s)) << "seq " << s;
    const auto want = cpu.blocks(s);
    EXPECT_EQ(gpu.blocks(s), std::vector<int32_t>(want.begin(), want.end())) << "seq " << s;
  }
}

enum class StepRun { kFused, kSplit, kGraph };

StepTotals run_step(GpuBatchPreparer& gpu, const Step& step, StepRun run) {
  switch (run) {
    case StepRun::kFused:
      return gpu.prepare(step);
    case StepRun::kSplit: {
      const StepTotals t = gpu.update(step);
      gpu.pack();
      return t;
    }
    case StepRun::kGraph:
      return gpu.prepare_graph(step);
  }
  return {};
}

// Runs `steps` random steps through both paths; returns how many were refused for blocks.
int run_random(const BatchConfig& c, uint64_t seed, int steps, StepRun run) {
  BlockTableManager cpu(c);
  GpuBatchPreparer gpu(c);
  if (run == StepRun::kGraph) gpu.capture_graph();
  RandomSteps gen(c, seed);
  std::vector<int32_t> buffer;
  int refused = 0;
  bool release = false;
  for (int i = 0; i < steps; ++i) {
    const Step& step = release ? gen.make_release(cpu.lengths()) : gen.make(cpu.lengths());
    release = false;
    bool cpu_refused = false;
    try {
      cpu.update(step);
    } catch (const OutOfMemory&) {
      cpu_refused = true;
    }
    run_step(gpu, step, run);
    if (run == StepRun::kFused) {
      EXPECT_EQ(gpu.last_descriptor_path(), DescriptorPath::kKernelParameters);
    }
    if (cpu_refused) {
      ++refused;
      release = true;
      EXPECT_THROW(gpu.synchronize(), OutOfMemory) << "step " << i;
      for (int32_t s = 0; s < c.max_seqs; ++s) EXPECT_EQ(gpu.length(s), cpu.length(s));
      EXPECT_NO_THROW(gpu.synchronize());  // the error was consumed
      continue;
    }
    buffer.resize(cpu.layout().total_ints);
    const MetadataSnapshot want = snapshot(cpu.pack(step, buffer));
    const MetadataSnapshot got = gpu.download();
    EXPECT_EQ(got, want) << "step " << i << ": " << got.first_difference(want);
    if (i % 97 == 0) expect_same_rows(cpu, gpu);
    if (::testing::Test::HasFailure()) {
      ADD_FAILURE() << "seed " << seed << " step " << i;
      return refused;
    }
  }
  expect_same_rows(cpu, gpu);
  return refused;
}

}  // namespace

TEST_F(GpuBatch, IdenticalToTheCpuPathOverRandomSteps) {
  int refused = 0;
  for (int32_t bs : {1, 16, 32, 64, 128, 256}) {
    const BatchConfig c = random_config(bs, bs == 1 ? 900 : 70);
    refused += run_random(c, 100 + static_cast<uint64_t>(bs), 600, StepRun::kFused);
    ASSERT_FALSE(HasFailure()) << "block size " << bs;
  }
  EXPECT_GT(refused, 0) << "exhaustion was never exercised";
}

TEST_F(GpuBatch, SplitUpdateAndPackIdentical) {
  int refused = 0;
  for (int32_t bs : {1, 16, 256}) {
    const BatchConfig c = random_config(bs, bs == 1 ? 900 : 70);
    refused += run_random(c, 300 + static_cast<uint64_t>(bs), 400, StepRun::kSplit);
    ASSERT_FALSE(HasFailure()) << "block size " << bs;
  }
  EXPECT_GT(refused, 0) << "exhaustion was never exercised";
}

TEST_F(GpuBatch, IdenticalUnderGraphReplay) {
  int refused = 0;
  for (int32_t bs : {1, 16, 64}) {
    refused += run_random(random_config(bs, bs == 1 ? 900 : 70), 7 + static_cast<uint64_t>(bs), 400,
                          StepRun::kGraph);
    ASSERT_FALSE(HasFailure()) << "block size " << bs;
  }
  EXPECT_GT(refused, 0) << "exhaustion was never exercised";
}

// Many rows: several scan chunks per thread block, several rows per block, more finished
// blocks than threads. With `rows` > 2664 a fused step's descriptor no longer fits the kernel
// parameters and is copied; with max_batch > 2728 the kernel reads it from global memory
// instead of staging it in shared memory.
void large_batches(int32_t rows, StepRun run) {
  BatchConfig c;
  c.block_size = 16;
  c.num_blocks = 20 * rows;
  c.max_seqs = rows + 52;
  c.max_batch = rows;
  c.max_blocks_per_seq = 80;
  c.max_tokens_per_step = 35 * rows;
  BlockTableManager cpu(c);
  GpuBatchPreparer gpu(c);
  if (run == StepRun::kGraph) gpu.capture_graph();
  std::vector<SeqStep> batch;
  for (int32_t s = 0; s < rows; ++s) batch.push_back({s, 0, 1 + (s * 37) % 33});
  std::vector<int32_t> finished;
  std::vector<int32_t> buffer;
  for (int round = 0; round < 3; ++round) {
    const Step step{batch, finished, {}};
    cpu.update(step);
    run_step(gpu, step, run);
    if (run == StepRun::kFused) {
      const size_t desc_ints = 8 + 3 * step.batch.size() + step.finished.size();
      EXPECT_EQ(gpu.last_descriptor_path(),
                desc_ints <= 8000 ? DescriptorPath::kKernelParameters : DescriptorPath::kCopied);
    }
    buffer.resize(cpu.layout().total_ints);
    const MetadataSnapshot want = snapshot(cpu.pack(step, buffer));
    const MetadataSnapshot got = gpu.download();
    ASSERT_EQ(got, want) << "round " << round << ": " << got.first_difference(want);
    for (auto& e : batch) {
      e.prior_len += e.new_tokens;
      e.new_tokens = 1 + (e.seq + round) % 17;
    }
    // Finish 60 % of the sequences (more than one pass of the kernel's threads) next round.
    if (round == 1) {
      finished.clear();
      std::vector<SeqStep> keep;
      for (const auto& e : batch)
        (e.seq < rows * 3 / 5 ? finished.push_back(e.seq) : keep.push_back(e));
      batch = keep;
    }
  }
  expect_same_rows(cpu, gpu);
}

TEST_F(GpuBatch, LargeBatchesIdentical) {
  for (StepRun run : {StepRun::kFused, StepRun::kSplit, StepRun::kGraph}) {
    large_batches(2048, run);  // more rows than the kernels have threads
    ASSERT_FALSE(HasFailure()) << "run " << static_cast<int>(run);
  }
}

TEST_F(GpuBatch, DescriptorTooLargeForParametersIsCopied) {
  for (StepRun run : {StepRun::kFused, StepRun::kGraph}) {
    large_batches(3000, run);
    ASSERT_FALSE(HasFailure()) << "run " << static_cast<int>(run);
  }
}

TEST_F(GpuBatch, SyntheticWorkloadsIdentical) {
  for (auto mode : {WorkloadMode::kDecode, WorkloadMode::kPrefill, WorkloadMode::kMixed}) {
    WorkloadConfig w;
    w.mode = mode;
    w.batch = 64;
    w.seq_len = 300;
    w.block_size = 16;
    w.steps = 40;
    w.prefill_chunk = 128;
    w.decode_tokens = 6;
    SyntheticWorkload a(w), b(w);
    BlockTableManager cpu(a.batch_config());
    CpuBatchPreparer upload(cpu);
    GpuBatchPreparer gpu(b.batch_config());
    auto both = [&](const Step& sa, const Step& sb) {
      upload.update(sa);
      const AttentionMetadata dev = upload.pack(sa);
      gpu.prepare(sb);
      upload.synchronize();
      const MetadataSnapshot host = snapshot(upload.host_metadata());
      const MetadataSnapshot uploaded = download_view(dev);
      EXPECT_EQ(uploaded, host) << uploaded.first_difference(host);
      const MetadataSnapshot got = gpu.download();
      EXPECT_EQ(got, host) << to_string(mode) << ": " << got.first_difference(host);
    };
    while (!a.setup_done()) {
      const Step& sa = a.next_setup();
      both(sa, b.next_setup());
    }
    for (int i = 0; i < w.steps; ++i) {
      const Step& sa = a.next();
      both(sa, b.next());
      ASSERT_FALSE(HasFailure()) << to_string(mode) << " step " << i;
    }
  }
}

TEST_F(GpuBatch, BadInputThrowsAndChangesNothing) {
  BatchConfig c = random_config(16, 8);
  GpuBatchPreparer gpu(c);
  const std::vector<SeqStep> first{{0, 0, 20}, {1, 0, 5}};
  gpu.prepare(Step{first, {}, {}});
  const MetadataSnapshot before = gpu.download();
  const auto rows0 = gpu.blocks(0);
  const size_t free_before = gpu.free_blocks();
  const std::vector<SeqStep> unknown{{5, 3, 1}};
  EXPECT_THROW(gpu.update(Step{unknown, {}, {}}), InvalidArgument);
  const std::vector<SeqStep> negative{{0, 20, -2}};
  EXPECT_THROW(gpu.update(Step{negative, {}, {}}), InvalidArgument);
  std::vector<SeqStep> too_many;
  for (int32_t s = 0; s <= c.max_batch; ++s) too_many.push_back({s + 2, 0, 1});
  EXPECT_THROW(gpu.update(Step{too_many, {}, {}}), InvalidArgument);
  EXPECT_EQ(gpu.download(), before);
  EXPECT_EQ(gpu.blocks(0), rows0);
  EXPECT_EQ(gpu.free_blocks(), free_before);

  // Exhaustion: found on the device, reported by synchronize(), nothing applied.
  const std::vector<SeqStep> big{{2, 0, 96}, {0, 20, 1}};  // 6 blocks, 5 free
  gpu.prepare(Step{big, {}, {}});
  const std::vector<SeqStep> queued{{0, 21, 1}};
  gpu.prepare(Step{queued, {}, {}});  // queued behind the failing step: also not applied
  EXPECT_THROW(gpu.synchronize(), OutOfMemory);
  EXPECT_EQ(gpu.length(0), 20);
  EXPECT_EQ(gpu.length(2), -1);
  EXPECT_EQ(gpu.blocks(0), rows0);
  EXPECT_EQ(gpu.free_blocks(), free_before);
  const std::vector<SeqStep> after{{0, 20, 1}};
  gpu.prepare(Step{after, {}, {}});  // usable again, from the state before the failure
  EXPECT_EQ(gpu.download().seq_lens, std::vector<int32_t>{21});
}
