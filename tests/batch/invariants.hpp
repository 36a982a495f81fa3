#pragma once
// Test helper: checks a step's metadata against the rules in attention_metadata.hpp and a
// manager's state, and dumps a manager's whole state for "nothing changed" comparisons.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "kvpager/batch/block_table_manager.hpp"

namespace kvpager::batch::testing {

// Everything observable about a manager.
struct ManagerState {
  std::vector<int32_t> lens;
  std::vector<std::vector<int32_t>> rows;
  std::vector<int32_t> refcounts;
  size_t free_blocks = 0;
  bool operator==(const ManagerState&) const = default;
};

inline ManagerState dump(const BlockTableManager& m) {
  ManagerState s;
  s.lens.assign(m.lengths().begin(), m.lengths().end());
  for (int32_t seq = 0; seq < m.config().max_seqs; ++seq) {
    auto b = m.blocks(seq);
    s.rows.emplace_back(b.begin(), b.end());
  }
  for (int32_t b = 0; b < m.config().num_blocks; ++b) s.refcounts.push_back(m.refcount(b));
  s.free_blocks = m.free_blocks();
  return s;
}

// The metadata of `step` (as packed after update) obeys the documented formulas, using the
// manager's rows as the truth for block ids.
inline void expect_metadata_consistent(const BlockTableManager& m, const Step& step,
                                       const MetadataSnapshot& s) {
  const int32_t bs = m.config().block_size;
  const int32_t width = m.config().max_blocks_per_seq;
  const auto b = static_cast<int32_t>(step.batch.size());
  ASSERT_EQ(s.header[0], b);
  ASSERT_EQ(s.cu_seqlens_q.front(), 0);
  ASSERT_EQ(s.cu_seqlens_k.front(), 0);
  ASSERT_EQ(s.paged_kv_indptr.front(), 0);
  int64_t tokens = 0, keys = 0, kv = 0;
  int32_t max_q = 0, max_k = 0;
  for (int32_t i = 0; i < b; ++i) {
    const SeqStep& e = step.batch[static_cast<size_t>(i)];
    const int32_t len = e.prior_len + e.new_tokens;
    const int32_t nb = blocks_for(len, bs);
    const auto row = m.blocks(e.seq);
    ASSERT_EQ(static_cast<int32_t>(row.size()), nb);
    EXPECT_EQ(s.seq_lens[static_cast<size_t>(i)], len);
    EXPECT_LT(s.cu_seqlens_q[static_cast<size_t>(i)], s.cu_seqlens_q[static_cast<size_t>(i) + 1]);
    EXPECT_EQ(s.cu_seqlens_q[static_cast<size_t>(i) + 1] - s.cu_seqlens_q[static_cast<size_t>(i)],
              e.new_tokens);
    EXPECT_EQ(s.cu_seqlens_k[static_cast<size_t>(i) + 1] - s.cu_seqlens_k[static_cast<size_t>(i)],
              len);
    EXPECT_EQ(
        s.paged_kv_indptr[static_cast<size_t>(i) + 1] - s.paged_kv_indptr[static_cast<size_t>(i)],
        nb);
    const int32_t last = s.paged_kv_last_page_len[static_cast<size_t>(i)];
    EXPECT_TRUE(last >= 1 && last <= bs);
    EXPECT_EQ((nb - 1) * bs + last, len);
    for (int32_t j = 0; j < width; ++j) {
      const int32_t v = s.block_table[static_cast<size_t>(i) * width + j];
      EXPECT_EQ(v, j < nb ? row[static_cast<size_t>(j)] : 0) << "row " << i << " col " << j;
      if (j < nb) {
        EXPECT_EQ(
            s.paged_kv_indices[static_cast<size_t>(s.paged_kv_indptr[static_cast<size_t>(i)] + j)],
            v);
      }
    }
    for (int32_t t = 0; t < e.new_tokens; ++t) {
      const int32_t pos = e.prior_len + t;
      const int32_t slot =
          s.slot_mapping[static_cast<size_t>(s.cu_seqlens_q[static_cast<size_t>(i)] + t)];
      EXPECT_EQ(slot, s.block_table[static_cast<size_t>(i) * width + pos / bs] * bs + pos % bs);
    }
    tokens += e.new_tokens;
    keys += len;
    kv += nb;
    max_q = std::max(max_q, e.new_tokens);
    max_k = std::max(max_k, len);
  }
  EXPECT_EQ(s.cu_seqlens_q.back(), tokens);
  EXPECT_EQ(s.cu_seqlens_k.back(), keys);
  EXPECT_EQ(s.paged_kv_indptr.back(), kv);
  EXPECT_EQ(s.header[1], tokens);
  EXPECT_EQ(s.header[2], kv);
  EXPECT_EQ(s.header[3], max_q);
  EXPECT_EQ(s.header[4], max_k);
  EXPECT_EQ(s.header[5], bs);
  EXPECT_EQ(s.header[6], width);
  EXPECT_EQ(s.slot_mapping.size(), static_cast<size_t>(tokens));
}

}  // namespace kvpager::batch::testing
