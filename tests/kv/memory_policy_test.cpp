// The kv side of the memory protocol, table by table, without threads, memory or a registry:
// one row per situation the background mapper meets.
#include "kvpager/kv/memory_policy.hpp"

#include <gtest/gtest.h>

#include <ostream>
#include <vector>

using namespace kvpager;
using namespace kvpager::kv;
using namespace std::chrono_literals;

namespace kvpager::kv {

std::ostream& operator<<(std::ostream& os, MapperAction a) {
  switch (a) {
    case MapperAction::kUnmapPage:
      return os << "unmap page";
    case MapperAction::kReleaseReady:
      return os << "release ready handles";
    case MapperAction::kMapReserve:
      return os << "map reserve";
    case MapperAction::kWait:
      return os << "wait";
  }
  return os << "?";
}

std::ostream& operator<<(std::ostream& os, const MemoryPolicyState& s) {
  return os << "{suspended " << s.reserve_suspended << ", blocked " << s.reserve_blocked
            << ", shedding " << s.shedding << ", release " << s.release_pending << ", idle "
            << s.idle_released << ", keep " << s.keep_pages << ", owed " << s.owed_pages << "}";
}

}  // namespace kvpager::kv

namespace {

constexpr uint64_t kPage = 2ull << 20;

const MemoryPolicyConfig kConfig{.reserve_pages = 1, .max_idle_pages = 4, .idle_release = 1000ms};

LinkPoll events(bool limit_changed, bool shed, uint64_t keep_bytes, uint64_t owed_bytes,
                uint64_t charged_bytes) {
  return LinkPoll{limits::LinkEvents{limit_changed, shed, keep_bytes, owed_bytes}, charged_bytes};
}

struct Row {
  const char* situation;
  MemoryPolicyState before;
  MapperInputs in;
  MapperAction action;
  MemoryPolicyState after;
  bool pays_debt = false;
  MemoryPolicyConfig config = kConfig;
};

// Pages: {mapped, free, unmapped, in_transition, limit}. page_bytes is kPage throughout.
const std::vector<Row> kRows = {
    {"steady: the reserve is mapped, nothing to do",
     {},
     {.pages = {3, 1, 13, 0, 16}, .page_bytes = kPage},
     MapperAction::kWait,
     {}},
    {"reserve refill: no free page, room under the limit",
     {},
     {.pages = {3, 0, 13, 0, 16}, .page_bytes = kPage},
     MapperAction::kMapReserve,
     {}},
    {"reserve refill stops at the limit",
     {},
     {.pages = {4, 0, 12, 0, 4}, .page_bytes = kPage},
     MapperAction::kWait,
     {}},
    {"pages in transition count against the limit",
     {},
     {.pages = {3, 0, 12, 1, 4}, .page_bytes = kPage},
     MapperAction::kWait,
     {}},
    {"reserve refill stops when every page is mapped",
     {},
     {.pages = {16, 0, 0, 0, 16}, .page_bytes = kPage},
     MapperAction::kWait,
     {}},
    {"no reserve after trim (suspended until the next alloc)",
     {.reserve_suspended = true},
     {.pages = {3, 0, 13, 0, 16}, .page_bytes = kPage},
     MapperAction::kWait,
     {.reserve_suspended = true}},
    {"no reserve after the budget refused it (until a free)",
     {.reserve_blocked = true},
     {.pages = {3, 0, 13, 0, 16}, .page_bytes = kPage},
     MapperAction::kWait,
     {.reserve_blocked = true}},
    {"too many idle pages: unmap",
     {},
     {.pages = {8, 5, 8, 0, 16}, .page_bytes = kPage},
     MapperAction::kUnmapPage,
     {}},
    {"limit lowered below what is mapped: unmap a free page, release ready handles later",
     {.reserve_blocked = true},
     {.pages = {6, 1, 10, 0, 4}, .page_bytes = kPage, .poll = events(true, false, 0, 0, 6 * kPage)},
     MapperAction::kUnmapPage,
     {.release_pending = true}},
    {"limit lowered, the pages above it unmapped: release ready handles",
     {.release_pending = true},
     {.pages = {4, 1, 12, 0, 4}, .page_bytes = kPage},
     MapperAction::kReleaseReady,
     {}},
    {"limit lowered below pages holding blocks in use: release ready handles, map nothing",
     {.release_pending = true},
     {.pages = {6, 0, 10, 0, 4}, .page_bytes = kPage},
     MapperAction::kReleaseReady,
     {}},
    {"limit lowered below blocks in use, ready handles released: wait for frees",
     {},
     {.pages = {6, 0, 10, 0, 4}, .page_bytes = kPage},
     MapperAction::kWait,
     {}},
    {"a changed limit retries a refused reserve (after releasing ready handles)",
     {.reserve_blocked = true},
     {.pages = {2, 0, 14, 0, 16},
      .page_bytes = kPage,
      .poll = events(true, false, 0, 0, 2 * kPage)},
     MapperAction::kReleaseReady,
     {}},
    {"shed without a guarantee: every free page goes, no reserve until the next alloc",
     {.reserve_blocked = true},
     {.pages = {4, 2, 12, 0, 16},
      .page_bytes = kPage,
      .poll = events(false, true, 0, 0, 4 * kPage)},
     MapperAction::kUnmapPage,
     {.reserve_suspended = true, .shedding = true, .release_pending = true}},
    {"shed within the guarantee: keeps what it holds",
     {},
     {.pages = {4, 1, 12, 0, 16},
      .page_bytes = kPage,
      .poll = events(false, true, 8 * kPage, 0, 4 * kPage)},
     MapperAction::kWait,
     {.keep_pages = 8}},
    {"shed above the guarantee: unmap down to it",
     {},
     {.pages = {4, 2, 12, 0, 16},
      .page_bytes = kPage,
      .poll = events(false, true, 2 * kPage, 0, 4 * kPage)},
     MapperAction::kUnmapPage,
     {.reserve_suspended = true, .shedding = true, .release_pending = true, .keep_pages = 2}},
    {"shed with pages within the guarantee but ready handles above it: release them",
     {},
     {.pages = {3, 1, 13, 0, 16},
      .page_bytes = kPage,
      .poll = events(false, true, 4 * kPage, 0, 6 * kPage)},
     MapperAction::kReleaseReady,
     {.reserve_suspended = true, .keep_pages = 4}},
    {"shedding stops at the guarantee",
     {.reserve_suspended = true, .shedding = true, .keep_pages = 2},
     {.pages = {2, 1, 14, 0, 16}, .page_bytes = kPage},
     MapperAction::kWait,
     {.reserve_suspended = true, .keep_pages = 2}},
    {"shedding stops when no free page is left",
     {.reserve_suspended = true, .shedding = true, .keep_pages = 2},
     {.pages = {5, 0, 11, 0, 16}, .page_bytes = kPage},
     MapperAction::kWait,
     {.reserve_suspended = true, .keep_pages = 2}},
    {"claims owed: unmap a free page, which pays one owed page (debt rounds up to pages)",
     {},
     {.pages = {6, 3, 10, 0, 16},
      .page_bytes = kPage,
      .poll = events(false, false, 0, 3 * kPage / 2, 6 * kPage)},
     MapperAction::kUnmapPage,
     {.release_pending = true, .owed_pages = 2},
     true},
    {"claims owed, no free page: release ready handles",
     {.release_pending = true, .owed_pages = 2},
     {.pages = {6, 0, 10, 0, 16}, .page_bytes = kPage},
     MapperAction::kReleaseReady,
     {.owed_pages = 2}},
    {"claims owed, nothing free left: no reserve while owing",
     {.owed_pages = 2},
     {.pages = {6, 0, 10, 0, 16}, .page_bytes = kPage},
     MapperAction::kWait,
     {.owed_pages = 2}},
    {"a poll replaces the guarantee and the debt (guarantee rounds down to pages)",
     {.keep_pages = 9, .owed_pages = 3},
     {.pages = {6, 1, 10, 0, 16},
      .page_bytes = kPage,
      .poll = events(false, false, 5 * kPage / 2, 0, 6 * kPage)},
     MapperAction::kWait,
     {.keep_pages = 2}},
    {"budget lowered below the sum: ready handles first, then free pages down to the guarantee",
     {.keep_pages = 2},
     {.pages = {5, 2, 11, 0, 16},
      .page_bytes = kPage,
      .excess_bytes = 3 * kPage,
      .ready_bytes = kPage},
     MapperAction::kUnmapPage,
     {.release_pending = true, .keep_pages = 2}},
    {"over the limit by ready handles alone: release them, keep the free page",
     {},
     {.pages = {4, 1, 12, 0, 4},
      .page_bytes = kPage,
      .excess_bytes = 2 * kPage,
      .ready_bytes = 2 * kPage},
     MapperAction::kReleaseReady,
     {}},
    {"excess at the guarantee: keeps its pages, maps no reserve",
     {.keep_pages = 2},
     {.pages = {2, 0, 14, 0, 16}, .page_bytes = kPage, .excess_bytes = kPage},
     MapperAction::kWait,
     {.keep_pages = 2}},
    {"ready bytes without an excess are ignored",
     {},
     {.pages = {3, 1, 13, 0, 16}, .page_bytes = kPage, .ready_bytes = 4 * kPage},
     MapperAction::kWait,
     {}},
    {"idle: no alloc for idle_release releases the ready handles once",
     {},
     {.pages = {3, 1, 13, 0, 16}, .page_bytes = kPage, .quiet_for = 1500ms},
     MapperAction::kReleaseReady,
     {.idle_released = true}},
    {"idle, released already: wait",
     {.idle_released = true},
     {.pages = {3, 1, 13, 0, 16}, .page_bytes = kPage, .quiet_for = 5000ms},
     MapperAction::kWait,
     {.idle_released = true}},
    {"not idle long enough: wait",
     {},
     {.pages = {3, 1, 13, 0, 16}, .page_bytes = kPage, .quiet_for = 999ms},
     MapperAction::kWait,
     {}},
    {"an alloc ends idleness (the next quiet period releases again)",
     {.idle_released = true},
     {.pages = {3, 0, 13, 0, 16}, .page_bytes = kPage, .allocs_moved = true},
     MapperAction::kMapReserve,
     {}},
    {"idle release off (idle_release 0)",
     {},
     {.pages = {3, 1, 13, 0, 16}, .page_bytes = kPage, .quiet_for = 60000ms},
     MapperAction::kWait,
     {},
     false,
     {.reserve_pages = 1, .max_idle_pages = 4, .idle_release = 0ms}},
    {"unmapping comes before releasing ready handles",
     {.release_pending = true},
     {.pages = {8, 5, 8, 0, 16}, .page_bytes = kPage},
     MapperAction::kUnmapPage,
     {.release_pending = true}},
};

TEST(MemoryPolicy, MapperStepPerSituation) {
  for (const Row& row : kRows) {
    SCOPED_TRACE(row.situation);
    const MapperStep step = decide_mapper_step(row.config, row.before, row.in);
    EXPECT_EQ(step.action, row.action);
    EXPECT_EQ(step.state, row.after);
    EXPECT_EQ(step.pays_debt, row.pays_debt);
  }
}

// The mapper's loop without its threads: carry out each step on page counts (and a count of
// ready pages) until it waits. Checks where a situation ends, not only its first step.
struct Settled {
  PageCounts pages;
  MemoryPolicyState state;
  size_t ready = 0;
  size_t steps = 0;
};

Settled settle(const MemoryPolicyConfig& config, MemoryPolicyState state, MapperInputs in,
               size_t ready, uint64_t charged_limit_pages) {
  Settled s{in.pages, state, ready, 0};
  for (; s.steps < 100; ++s.steps) {
    const size_t charged = s.pages.mapped + s.ready;
    in.pages = s.pages;
    in.excess_bytes =
        charged > charged_limit_pages ? (charged - charged_limit_pages) * in.page_bytes : 0;
    in.ready_bytes = s.ready * in.page_bytes;
    const MapperStep step = decide_mapper_step(config, s.state, in);
    s.state = step.state;
    in.poll.reset();  // one poll, then the steps until the next
    in.allocs_moved = false;
    switch (step.action) {
      case MapperAction::kUnmapPage:
        --s.pages.mapped, --s.pages.free, ++s.pages.unmapped;
        if (step.pays_debt) s.state = on_debt_page_paid(s.state);
        break;
      case MapperAction::kReleaseReady:
        s.ready = 0;
        break;
      case MapperAction::kMapReserve:
        ++s.pages.mapped, ++s.pages.free, --s.pages.unmapped;
        break;
      case MapperAction::kWait:
        return s;
    }
  }
  return s;
}

TEST(MemoryPolicy, LoweredLimitSettlesAtTheLimitWithoutReadyHandles) {
  MapperInputs in{
      .pages = {8, 5, 8, 0, 4}, .page_bytes = kPage, .poll = events(true, false, 0, 0, 10 * kPage)};
  const Settled s = settle(kConfig, {}, in, 2, 4);
  EXPECT_EQ(s.pages.mapped, 4u);
  EXPECT_EQ(s.pages.free, 1u);
  EXPECT_EQ(s.ready, 0u);
  EXPECT_EQ(s.state, MemoryPolicyState{});
}

TEST(MemoryPolicy, ShedWithAGuaranteeStopsThereAndSuspendsTheReserve) {
  MapperInputs in{.pages = {6, 4, 10, 0, 16},
                  .page_bytes = kPage,
                  .poll = events(false, true, 3 * kPage, 0, 7 * kPage)};
  const Settled s = settle(kConfig, {}, in, 1, 16);
  EXPECT_EQ(s.pages.mapped, 3u);
  EXPECT_EQ(s.pages.free, 1u);
  EXPECT_EQ(s.ready, 0u);
  EXPECT_TRUE(s.state.reserve_suspended);
  EXPECT_FALSE(s.state.shedding);
}

TEST(MemoryPolicy, DebtIsPaidFromFreePagesThenWaitsForFrees) {
  MapperInputs in{.pages = {8, 2, 8, 0, 16},
                  .page_bytes = kPage,
                  .poll = events(false, false, 0, 3 * kPage, 8 * kPage)};
  const Settled s = settle(kConfig, {}, in, 0, 16);
  EXPECT_EQ(s.pages.mapped, 6u);
  EXPECT_EQ(s.pages.free, 0u);
  EXPECT_EQ(s.state.owed_pages, 1u);  // the rest needs blocks freed (owed_blocks)
  EXPECT_EQ(owed_blocks(s.state.owed_pages, s.pages.free, 0, kPage, 16), 16u);
}

TEST(MemoryPolicy, BudgetLoweredBelowTheSumGivesBackDownToTheGuarantee) {
  MemoryPolicyState state{.keep_pages = 2};
  MapperInputs in{.pages = {6, 4, 10, 0, 16}, .page_bytes = kPage};
  const Settled s = settle(kConfig, state, in, 2, 1);
  EXPECT_EQ(s.pages.mapped, 2u);
  EXPECT_EQ(s.ready, 0u);
  EXPECT_EQ(s.pages.free, 0u);  // no reserve while the excess lasts
}

TEST(MemoryPolicy, FreeUnmapsWhenIdlePagesOrPagesAboveTheLimit) {
  struct FreeRow {
    const char* situation;
    PageCounts pages;
    bool due;
  };
  const FreeRow rows[] = {
      {"within max_idle_pages", {6, 4, 10, 0, 16}, false},
      {"beyond max_idle_pages", {6, 5, 10, 0, 16}, true},
      {"above a lowered limit", {6, 1, 10, 0, 4}, true},
      {"above the limit counting pages in transition", {4, 1, 10, 1, 4}, true},
      {"above the limit but nothing free", {6, 0, 10, 0, 4}, false},
  };
  for (const FreeRow& row : rows) {
    SCOPED_TRACE(row.situation);
    EXPECT_EQ(unmap_due_after_free(kConfig, row.pages), row.due);
  }
}

TEST(MemoryPolicy, AllocWakesTheMapperToRefillTheReserve) {
  EXPECT_TRUE(reserve_due_after_alloc(kConfig, {}, 0, 13));
  EXPECT_FALSE(reserve_due_after_alloc(kConfig, {}, 1, 13));  // the reserve is there
  EXPECT_FALSE(reserve_due_after_alloc(kConfig, {}, 0, 0));   // every page is mapped
  EXPECT_FALSE(reserve_due_after_alloc(kConfig, {.reserve_blocked = true}, 0, 13));
}

TEST(MemoryPolicy, PublicCallsChangeTheState) {
  const MemoryPolicyState all{true, true, true, true, true, 3, 2};
  EXPECT_EQ(on_alloc(all), (MemoryPolicyState{false, true, false, true, true, 3, 2}));
  EXPECT_EQ(on_free_or_resize(all), (MemoryPolicyState{true, false, true, true, true, 3, 2}));
  EXPECT_EQ(on_trim(MemoryPolicyState{}), (MemoryPolicyState{.reserve_suspended = true}));
  EXPECT_EQ(on_reserve_refused(MemoryPolicyState{}), (MemoryPolicyState{.reserve_blocked = true}));
  EXPECT_EQ(on_debt_page_paid(all).owed_pages, 1u);
  EXPECT_EQ(on_debt_page_paid(MemoryPolicyState{}).owed_pages, 0u);
}

TEST(MemoryPolicy, ClaimsAskOnlyBeyondTheCharge) {
  struct ClaimRow {
    const char* situation;
    size_t mapped, more;
    uint64_t charged, claim;
  };
  const ClaimRow rows[] = {
      {"nothing charged beyond the mapped pages", 4, 2, 4 * kPage, 2 * kPage},
      {"ready handles cover part of it", 4, 2, 5 * kPage, kPage},
      {"ready handles cover all of it", 4, 2, 7 * kPage, 0},
      {"nothing more needed", 4, 0, 4 * kPage, 0},
  };
  for (const ClaimRow& row : rows) {
    SCOPED_TRACE(row.situation);
    EXPECT_EQ(claim_bytes(row.mapped, row.more, kPage, row.charged), row.claim);
  }
}

TEST(MemoryPolicy, OwedBlocksAreWhatFreePagesAndReadyHandlesDoNotPay) {
  EXPECT_EQ(owed_blocks(0, 0, 0, kPage, 16), 0u);
  EXPECT_EQ(owed_blocks(3, 1, kPage, kPage, 16), 16u);
  EXPECT_EQ(owed_blocks(3, 2, kPage, kPage, 16), 0u);
  EXPECT_EQ(owed_blocks(3, 0, kPage / 2, kPage, 16), 48u);  // part of a handle pays nothing
}

}  // namespace
