// The registry side of the memory protocol, table by table: what budgets, guarantees and claims
// ask of one member. No segment, no processes.
#include "kvpager/limits/guarantee_shares.hpp"

#include <gtest/gtest.h>

#include <cstdint>

using namespace kvpager::limits;

namespace {

constexpr uint64_t MiB = 1ull << 20;
constexpr uint64_t kNone = UINT64_MAX;  // no instance limit

TEST(GuaranteeShares, OwedShare) {
  struct Row {
    const char* situation;
    uint64_t borrowed, shortfall, borrowed_total, owed;
  };
  const Row rows[] = {
      {"borrows nothing: owes nothing", 0, 8 * MiB, 8 * MiB, 0},
      {"claims fit the free budget: nothing", 4 * MiB, 0, 4 * MiB, 0},
      {"the only borrower owes the whole shortfall", 4 * MiB, 2 * MiB, 4 * MiB, 2 * MiB},
      {"never more than it borrows", 4 * MiB, 6 * MiB, 4 * MiB, 4 * MiB},
      {"two borrowers split it by what each borrows", 3 * MiB, 4 * MiB, 4 * MiB, 3 * MiB},
      {"the smaller borrower's share", 1 * MiB, 4 * MiB, 4 * MiB, 1 * MiB},
      {"equal borrowers: half each", 2 * MiB, 2 * MiB, 4 * MiB, 1 * MiB},
      {"shares round up (a byte short is still owed)", 1, 1, 3, 1},
      {"a stale total below its own borrowing counts its own", 4 * MiB, 2 * MiB, 1 * MiB, 2 * MiB},
      {"no overflow near the top", UINT64_MAX / 2, UINT64_MAX / 2, UINT64_MAX / 2, UINT64_MAX / 2},
  };
  for (const Row& row : rows) {
    SCOPED_TRACE(row.situation);
    EXPECT_EQ(owed_share(row.borrowed, row.shortfall, row.borrowed_total), row.owed);
  }
}

TEST(GuaranteeShares, Excess) {
  struct Row {
    const char* situation;
    uint64_t charged, limit, guarantee;
    DeviceTotals device;
    uint64_t excess;
  };
  const Row rows[] = {
      {"within everything", 4 * MiB, 8 * MiB, 0, {16 * MiB, 10 * MiB}, 0},
      {"limit lowered below the charge", 6 * MiB, 4 * MiB, 0, {16 * MiB, 10 * MiB}, 2 * MiB},
      {"budget lowered below the sum: the overshoot",
       8 * MiB,
       kNone,
       0,
       {10 * MiB, 12 * MiB},
       2 * MiB},
      {"budget below the sum: at most the charge above the guarantee",
       8 * MiB,
       kNone,
       7 * MiB,
       {10 * MiB, 12 * MiB},
       1 * MiB},
      {"budget below the sum, within the guarantee: keeps it",
       6 * MiB,
       kNone,
       6 * MiB,
       {10 * MiB, 12 * MiB},
       0},
      {"both: the larger", 8 * MiB, 5 * MiB, 0, {10 * MiB, 12 * MiB}, 3 * MiB},
  };
  for (const Row& row : rows) {
    SCOPED_TRACE(row.situation);
    EXPECT_EQ(excess_of(row.charged, row.limit, row.guarantee, row.device), row.excess);
  }
}

TEST(GuaranteeShares, Headroom) {
  struct Row {
    const char* situation;
    uint64_t charged, limit, claimed_by_others;
    DeviceTotals device;
    uint64_t headroom;
  };
  const Row rows[] = {
      {"the free budget binds", 2 * MiB, kNone, 0, {16 * MiB, 10 * MiB}, 6 * MiB},
      {"its own limit binds", 2 * MiB, 4 * MiB, 0, {16 * MiB, 10 * MiB}, 2 * MiB},
      {"others' claims keep part of the free budget",
       2 * MiB,
       kNone,
       4 * MiB,
       {16 * MiB, 10 * MiB},
       2 * MiB},
      {"all of the free budget claimed", 2 * MiB, kNone, 8 * MiB, {16 * MiB, 10 * MiB}, 0},
      {"over its limit", 6 * MiB, 4 * MiB, 0, {16 * MiB, 10 * MiB}, 0},
      {"the device over its budget", 2 * MiB, kNone, 0, {10 * MiB, 12 * MiB}, 0},
  };
  for (const Row& row : rows) {
    SCOPED_TRACE(row.situation);
    EXPECT_EQ(headroom_of(row.charged, row.limit, row.claimed_by_others, row.device), row.headroom);
  }
}

}  // namespace
