// The CPU block-table manager: hand-checked metadata, sharing, reuse, errors (label unit).
#include "kvpager/batch/block_table_manager.hpp"

#include <gtest/gtest.h>

#include <vector>

#include "invariants.hpp"
#include "kvpager/batch/free_list_block_source.hpp"
#include "kvpager/common/error.hpp"

using namespace kvpager;
using namespace kvpager::batch;
using kvpager::batch::testing::dump;

namespace {

BatchConfig small_config(int32_t block_size = 4) {
  BatchConfig c;
  c.block_size = block_size;
  c.num_blocks = 16;
  c.max_seqs = 8;
  c.max_batch = 4;
  c.max_blocks_per_seq = 4;
  c.max_tokens_per_step = 32;
  c.max_forks_per_step = 2;
  return c;
}

struct Packed {
  std::vector<int32_t> buffer;
  MetadataSnapshot s;
};

Packed apply(BlockTableManager& m, std::vector<SeqStep> batch, std::vector<int32_t> finished = {},
             std::vector<Fork> forks = {}) {
  const Step step{batch, finished, forks};
  m.update(step);
  Packed p;
  p.buffer.resize(m.layout().total_ints);
  p.s = snapshot(m.pack(step, p.buffer));
  kvpager::batch::testing::expect_metadata_consistent(m, step, p.s);
  return p;
}

using V = std::vector<int32_t>;

}  // namespace

TEST(FreeListBlockSource, HandsOutLowIdsFirstAndReusesTheLastFreed) {
  FreeListBlockSource src(4);
  std::vector<BlockId> out(4);
  src.alloc(2, out);
  EXPECT_EQ(out[0].value, 0);
  EXPECT_EQ(out[1].value, 1);
  EXPECT_EQ(src.free_blocks(), 2u);
  EXPECT_THROW(src.alloc(3, out), OutOfMemory);
  EXPECT_EQ(src.free_blocks(), 2u);  // all or nothing
  const BlockId one[] = {BlockId(1)};
  src.free(one);
  src.alloc(1, out);
  EXPECT_EQ(out[0].value, 1);
  const BlockId bad[] = {BlockId(7)};
  EXPECT_THROW(src.free(bad), InvalidArgument);
  EXPECT_THROW(FreeListBlockSource(0), InvalidArgument);
}

TEST(BlockTableManager, PrefillThenDecodeGivesTheDocumentedArrays) {
  BlockTableManager m(small_config(4));
  Packed p = apply(m, {{0, 0, 6}, {1, 0, 3}});
  EXPECT_EQ(p.s.header, (V{2, 9, 3, 6, 6, 4, 4, 0}));
  EXPECT_EQ(p.s.seq_lens, (V{6, 3}));
  EXPECT_EQ(p.s.cu_seqlens_q, (V{0, 6, 9}));
  EXPECT_EQ(p.s.cu_seqlens_k, (V{0, 6, 9}));
  EXPECT_EQ(p.s.paged_kv_indptr, (V{0, 2, 3}));
  EXPECT_EQ(p.s.paged_kv_last_page_len, (V{2, 3}));
  EXPECT_EQ(p.s.block_table, (V{0, 1, 0, 0, 2, 0, 0, 0}));
  EXPECT_EQ(p.s.paged_kv_indices, (V{0, 1, 2}));
  EXPECT_EQ(p.s.slot_mapping, (V{0, 1, 2, 3, 4, 5, 8, 9, 10}));

  p = apply(m, {{1, 3, 1}, {0, 6, 1}});  // seq 1 fills block 2; seq 0 writes position 6
  EXPECT_EQ(p.s.slot_mapping, (V{11, 6}));
  EXPECT_EQ(p.s.cu_seqlens_k, (V{0, 4, 11}));
  EXPECT_EQ(p.s.paged_kv_last_page_len, (V{4, 3}));

  p = apply(m, {{1, 4, 1}});  // crosses a boundary: block 3
  EXPECT_EQ(m.blocks(1).size(), 2u);
  EXPECT_EQ(m.blocks(1)[1], 3);
  EXPECT_EQ(p.s.slot_mapping, (V{12}));
  EXPECT_EQ(p.s.block_table, (V{2, 3, 0, 0}));
  EXPECT_EQ(m.free_blocks(), 12u);
}

TEST(BlockTableManager, BlockSizeOneIsATokenPool) {
  BlockTableManager m(small_config(1));
  Packed p = apply(m, {{3, 0, 3}, {5, 0, 2}});
  EXPECT_EQ(p.s.slot_mapping, (V{0, 1, 2, 3, 4}));
  EXPECT_EQ(p.s.paged_kv_indices, (V{0, 1, 2, 3, 4}));
  EXPECT_EQ(p.s.paged_kv_last_page_len, (V{1, 1}));
  p = apply(m, {{5, 2, 1}});
  EXPECT_EQ(p.s.slot_mapping, (V{5}));
}

TEST(BlockTableManager, ForkSharesFullBlocksAndFreesOnlyUnreferencedOnes) {
  BlockTableManager m(small_config(4));
  apply(m, {{0, 0, 10}});  // blocks 0,1,2 (2 full)
  Packed p = apply(m, {{1, 8, 2}, {0, 10, 1}}, {}, {{0, 1, 10}});
  EXPECT_EQ(m.length(1), 10);
  EXPECT_EQ(m.blocks(1)[0], 0);  // shared
  EXPECT_EQ(m.blocks(1)[1], 1);
  EXPECT_EQ(m.blocks(1)[2], 3);  // its own third block
  EXPECT_EQ(m.refcount(0), 2);
  EXPECT_EQ(m.refcount(2), 1);
  EXPECT_EQ(p.s.slot_mapping, (V{12, 13, 10}));  // child pos 8,9 in block 3; parent pos 10
  const size_t free_before = m.free_blocks();
  apply(m, {}, {0});  // parent finishes: only its private block 2 goes back
  EXPECT_EQ(m.free_blocks(), free_before + 1);
  EXPECT_EQ(m.refcount(0), 1);
  EXPECT_EQ(m.refcount(2), 0);
  apply(m, {}, {1});
  EXPECT_EQ(m.free_blocks(), 16u);
  // Freed blocks are reused, most recently freed first: 1's row was [0, 1, 3], pushed in order.
  apply(m, {{2, 0, 5}});
  EXPECT_EQ(m.blocks(2)[0], 3);
  EXPECT_EQ(m.blocks(2)[1], 1);
}

TEST(BlockTableManager, BlocksFreedByAStepServeTheNextStep) {
  BatchConfig c = small_config(4);
  c.num_blocks = 4;
  BlockTableManager m(c);
  apply(m, {{0, 0, 16}});  // all four blocks
  const auto before = dump(m);
  const std::vector<SeqStep> admit{{1, 0, 4}};
  const std::vector<int32_t> finish{0};
  EXPECT_THROW(m.update(Step{admit, finish, {}}), OutOfMemory);
  EXPECT_EQ(dump(m), before);
  apply(m, {}, {0});
  apply(m, {{1, 0, 4}});
  EXPECT_EQ(m.blocks(1)[0], 3);
}

TEST(BlockTableManager, BadStepsThrowAndChangeNothing) {
  BlockTableManager m(small_config(4));
  apply(m, {{0, 0, 5}, {1, 0, 2}});
  const auto before = dump(m);
  auto expect_rejected = [&](std::vector<SeqStep> batch, std::vector<int32_t> finished,
                             std::vector<Fork> forks, const char* why) {
    EXPECT_THROW(m.update(Step{batch, finished, forks}), InvalidArgument) << why;
    EXPECT_EQ(dump(m), before) << why;
  };
  expect_rejected({{4, 3, 1}}, {}, {}, "unknown sequence");
  expect_rejected({{9, 0, 1}}, {}, {}, "sequence id out of range");
  expect_rejected({{-1, 0, 1}}, {}, {}, "negative sequence id");
  expect_rejected({{0, -5, 1}}, {}, {}, "negative prior length");
  expect_rejected({{0, 5, -1}}, {}, {}, "negative new tokens");
  expect_rejected({{0, 5, 0}}, {}, {}, "zero new tokens");
  expect_rejected({{0, 4, 1}}, {}, {}, "prior length mismatch");
  expect_rejected({{0, 5, 1}, {0, 5, 1}}, {}, {}, "duplicate entry");
  expect_rejected({{2, 0, 1}, {3, 0, 1}, {4, 0, 1}, {5, 0, 1}, {6, 0, 1}}, {}, {},
                  "batch beyond max_batch");
  expect_rejected({{2, 0, 12}, {3, 0, 12}, {4, 0, 12}}, {}, {},
                  "tokens beyond max_tokens_per_step");
  expect_rejected({{0, 5, 12}}, {}, {}, "length beyond max_blocks_per_seq * block_size");
  expect_rejected({}, {3}, {}, "unknown finished sequence");
  expect_rejected({}, {0, 0}, {}, "finished twice");
  expect_rejected({{0, 5, 1}}, {0}, {}, "in the batch and finished");
  expect_rejected({}, {}, {{3, 4, 0}}, "unknown fork parent");
  expect_rejected({}, {}, {{0, 1, 0}}, "fork child already live");
  expect_rejected({}, {}, {{0, 4, 6}}, "fork prefix beyond the parent");
  expect_rejected({}, {0}, {{0, 4, 4}}, "fork of a finished parent");
  expect_rejected({{4, 0, 1}}, {}, {{0, 4, 4}}, "fork child with the wrong prior length");
  expect_rejected({}, {}, {{0, 4, 4}, {1, 4, 0}}, "two forks into one child");
  expect_rejected({}, {}, {{0, 4, 4}, {4, 5, 0}}, "a child that is also a parent");
  apply(m, {{0, 5, 1}});  // still usable
}

TEST(BlockTableManager, ExhaustionThrowsOutOfMemoryAndChangesNothing) {
  BatchConfig c = small_config(4);
  c.num_blocks = 5;
  BlockTableManager m(c);
  apply(m, {{0, 0, 5}, {1, 0, 2}});  // 3 of 5 blocks
  const auto before = dump(m);
  const std::vector<SeqStep> big{{2, 0, 4}, {0, 5, 4}, {3, 0, 1}};  // 3 more needed
  const std::vector<Fork> fork{{0, 4, 4}};
  EXPECT_THROW(m.update(Step{big, {}, fork}), OutOfMemory);
  EXPECT_EQ(dump(m), before);
  apply(m, {{2, 0, 4}, {0, 5, 4}});  // exactly 2 fit
  EXPECT_EQ(m.free_blocks(), 0u);
}

TEST(BlockTableManager, PackChecksItsBufferAndStep) {
  BlockTableManager m(small_config(4));
  const std::vector<SeqStep> b{{0, 0, 5}};
  const Step step{b, {}, {}};
  m.update(step);
  std::vector<int32_t> small(m.layout().total_ints - 1);
  EXPECT_THROW(m.pack(step, small), InvalidArgument);
  std::vector<int32_t> buf(m.layout().total_ints);
  const std::vector<SeqStep> other{{0, 0, 4}};
  EXPECT_THROW(m.pack(Step{other, {}, {}}, buf), InvalidArgument);
}

TEST(BlockTableManager, RejectsBadConfigs) {
  BatchConfig c = small_config(4);
  c.block_size = 3;
  EXPECT_THROW(BlockTableManager{c}, InvalidArgument);
  c.block_size = 512;
  EXPECT_THROW(BlockTableManager{c}, InvalidArgument);
  c = small_config(4);
  c.max_batch = 0;
  EXPECT_THROW(BlockTableManager{c}, InvalidArgument);
}

namespace {
// What an adapter over another allocator looks like (e.g. kvpager's KvCache): ids handed out
// from the top of the id space, to show the manager takes whatever the source gives.
class DescendingSource final : public BlockSource {
 public:
  explicit DescendingSource(int32_t n) : inner_(n), n_(n) {}
  void alloc(size_t k, std::span<BlockId> out) override {
    inner_.alloc(k, out);
    for (size_t i = 0; i < k; ++i) out[i] = BlockId(n_ - 1 - out[i].value);
  }
  void free(std::span<const BlockId> blocks) override {
    for (BlockId b : blocks) {
      const BlockId mapped[] = {BlockId(n_ - 1 - b.value)};
      inner_.free(mapped);
    }
  }
  size_t free_blocks() const override { return inner_.free_blocks(); }
  size_t id_limit() const override { return inner_.id_limit(); }

 private:
  FreeListBlockSource inner_;
  int32_t n_;
};

class BrokenSource final : public BlockSource {
 public:
  void alloc(size_t k, std::span<BlockId> out) override {
    for (size_t i = 0; i < k; ++i) out[i] = BlockId(100);  // out of range
    taken += k;
  }
  void free(std::span<const BlockId> blocks) override { taken -= blocks.size(); }
  size_t free_blocks() const override { return 16; }
  size_t id_limit() const override { return 16; }
  size_t taken = 0;
};
}  // namespace

TEST(BlockTableManager, UsesAnyBlockSource) {
  DescendingSource src(16);
  BlockTableManager m(small_config(4), src);
  Packed p = apply(m, {{0, 0, 5}});
  EXPECT_EQ(p.s.paged_kv_indices, (V{15, 14}));
  EXPECT_EQ(p.s.slot_mapping, (V{60, 61, 62, 63, 56}));
  apply(m, {}, {0});
  EXPECT_EQ(src.free_blocks(), 16u);

  BrokenSource broken;
  BlockTableManager bm(small_config(4), broken);
  const auto before = dump(bm);
  const std::vector<SeqStep> b{{0, 0, 5}};
  EXPECT_THROW(bm.update(Step{b, {}, {}}), StateError);
  EXPECT_EQ(broken.taken, 0u);  // handed back
  EXPECT_EQ(dump(bm), before);
}
