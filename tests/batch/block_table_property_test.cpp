// Property test of the CPU manager (label unit): thousands of random steps (admissions,
// prefill chunks, decodes, completions, forks, exhaustion) against an independent model of
// which logical block each sequence holds. Checks after every step: rows and lengths match the
// model; physical and logical blocks correspond one to one (a block is in two live rows only
// when they share it); refcounts equal the number of rows holding a block; free + live blocks
// = pool; every metadata formula holds; a refused step changes nothing; freed blocks are reused.
#include <gtest/gtest.h>

#include <map>
#include <unordered_map>
#include <vector>

#include "invariants.hpp"
#include "kvpager/batch/block_table_manager.hpp"
#include "kvpager/batch/synthetic_workload.hpp"
#include "kvpager/common/error.hpp"
#include "random_steps.hpp"

using namespace kvpager;
using namespace kvpager::batch;
using namespace kvpager::batch::testing;

namespace {

struct Case {
  int32_t block_size;
  int32_t num_blocks;
  uint64_t seed;
};

class BlockTableProperty : public ::testing::TestWithParam<Case> {};

// Which logical block (numbered as the model creates them) sits at each row position.
struct Model {
  std::map<int32_t, std::vector<int64_t>> rows;
  std::map<int32_t, int32_t> lens;
  int64_t next_logical = 0;

  void apply(const Step& step, int32_t bs) {
    for (const Fork& f : step.forks) {
      const int32_t shared = f.prefix_len / bs;
      rows[f.child].assign(rows[f.parent].begin(), rows[f.parent].begin() + shared);
      lens[f.child] = shared * bs;
    }
    for (const SeqStep& e : step.batch) {
      auto& r = rows[e.seq];
      const int32_t len = e.prior_len + e.new_tokens;
      while (static_cast<int32_t>(r.size()) < blocks_for(len, bs)) r.push_back(next_logical++);
      lens[e.seq] = len;
    }
    for (int32_t seq : step.finished) {
      rows.erase(seq);
      lens.erase(seq);
    }
  }
};

}  // namespace

TEST_P(BlockTableProperty, InvariantsHoldOverRandomSteps) {
  const Case p = GetParam();
  BatchConfig c;
  c.block_size = p.block_size;
  c.num_blocks = p.num_blocks;
  c.max_seqs = 24;
  c.max_batch = 12;
  c.max_blocks_per_seq = p.block_size == 1 ? 96 : 8;
  c.max_tokens_per_step = 4 * std::max(p.block_size, 16);
  c.max_forks_per_step = 3;
  BlockTableManager m(c);
  RandomSteps gen(c, p.seed);
  Model model;
  std::vector<int32_t> buffer;
  std::vector<uint8_t> ever_used(static_cast<size_t>(c.num_blocks), 0);
  int64_t reused = 0, refused = 0, forks = 0, completions = 0;
  constexpr int kSteps = 1500;
  bool release = false;
  for (int step_no = 0; step_no < kSteps; ++step_no) {
    const Step& step = release ? gen.make_release(m.lengths()) : gen.make(m.lengths());
    release = false;
    const ManagerState before = dump(m);
    try {
      m.update(step);
    } catch (const OutOfMemory&) {
      ++refused;
      release = true;
      ASSERT_EQ(dump(m), before) << "refused step " << step_no << " changed the manager";
      continue;
    }
    model.apply(step, c.block_size);
    forks += static_cast<int64_t>(step.forks.size());
    completions += static_cast<int64_t>(step.finished.size());
    buffer.resize(m.layout().total_ints);
    const MetadataSnapshot s = snapshot(m.pack(step, buffer));
    expect_metadata_consistent(m, step, s);

    std::unordered_map<int32_t, int64_t> phys_to_logical;
    std::unordered_map<int64_t, int32_t> logical_to_phys;
    std::unordered_map<int32_t, int32_t> holders;
    for (int32_t seq = 0; seq < c.max_seqs; ++seq) {
      const auto it = model.lens.find(seq);
      ASSERT_EQ(m.length(seq), it == model.lens.end() ? -1 : it->second) << "seq " << seq;
      const auto row = m.blocks(seq);
      if (it == model.lens.end()) continue;
      const auto& logical = model.rows[seq];
      ASSERT_EQ(row.size(), logical.size());
      for (size_t j = 0; j < row.size(); ++j) {
        const int32_t b = row[j];
        ASSERT_TRUE(b >= 0 && b < c.num_blocks);
        const auto [pl, new_phys] = phys_to_logical.emplace(b, logical[j]);
        ASSERT_EQ(pl->second, logical[j]) << "block " << b << " in two rows without sharing";
        const auto [lp, new_logical] = logical_to_phys.emplace(logical[j], b);
        ASSERT_EQ(lp->second, b) << "a shared block has two physical ids";
        ++holders[b];
      }
    }
    for (const auto& [b, n] : holders) ASSERT_EQ(m.refcount(b), n) << "block " << b;
    ASSERT_EQ(m.free_blocks() + holders.size(), static_cast<size_t>(c.num_blocks));
    for (const SeqStep& e : step.batch) {  // blocks this step handed out
      const auto row = m.blocks(e.seq);
      for (int32_t j = blocks_for(e.prior_len, c.block_size); j < static_cast<int32_t>(row.size());
           ++j) {
        if (ever_used[static_cast<size_t>(row[static_cast<size_t>(j)])]) ++reused;
        ever_used[static_cast<size_t>(row[static_cast<size_t>(j)])] = 1;
      }
    }
    if (::testing::Test::HasFailure()) FAIL() << "at step " << step_no;
  }
  EXPECT_GT(reused, 0) << "freed blocks were never handed out again";
  EXPECT_GT(forks, 10);
  EXPECT_GT(completions, 50);
  if (p.num_blocks < 60) {
    EXPECT_GT(refused, 0) << "the small pool never ran out";
  }
  RecordProperty("refused_steps", static_cast<int>(refused));
}

INSTANTIATE_TEST_SUITE_P(BlockSizes, BlockTableProperty,
                         ::testing::Values(Case{1, 600, 11}, Case{1, 250, 12}, Case{16, 96, 13},
                                           Case{16, 40, 14}, Case{32, 64, 15}, Case{64, 48, 16},
                                           Case{128, 40, 17}, Case{256, 30, 18}),
                         [](const ::testing::TestParamInfo<Case>& i) {
                           return "bs" + std::to_string(i.param.block_size) + "_pool" +
                                  std::to_string(i.param.num_blocks);
                         });

TEST(BlockTableProperty, SyntheticWorkloadsRunThrough) {
  for (auto mode : {WorkloadMode::kDecode, WorkloadMode::kPrefill, WorkloadMode::kMixed}) {
    for (int32_t bs : {1, 16, 256}) {
      WorkloadConfig w;
      w.mode = mode;
      w.batch = 8;
      w.seq_len = 100;
      w.block_size = bs;
      w.steps = 60;
      w.prefill_chunk = 32;
      w.decode_tokens = 5;
      SyntheticWorkload wl(w);
      BlockTableManager m(wl.batch_config());
      std::vector<int32_t> buffer;
      int64_t finished = 0;
      auto run = [&](const Step& step) {
        m.update(step);
        buffer.resize(m.layout().total_ints);
        expect_metadata_consistent(m, step, snapshot(m.pack(step, buffer)));
        finished += static_cast<int64_t>(step.finished.size());
      };
      while (!wl.setup_done()) run(wl.next_setup());
      for (int i = 0; i < w.steps; ++i) run(wl.next());
      if (mode != WorkloadMode::kDecode) {
        EXPECT_GT(finished, 0) << to_string(mode);
      }
      ASSERT_FALSE(::testing::Test::HasFailure()) << to_string(mode) << " bs " << bs;
    }
  }
}
