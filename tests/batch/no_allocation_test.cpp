// The CPU hot path allocates nothing once constructed (label unit): update() and pack() over a
// random workload (admissions, growth, forks, completions) run with a counting operator new.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

#include "kvpager/batch/block_table_manager.hpp"
#include "kvpager/common/error.hpp"
#include "random_steps.hpp"

namespace {
std::atomic<long> g_allocations{0};
}  // namespace

void* operator new(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}

using namespace kvpager;
using namespace kvpager::batch;

TEST(BlockTableManager, UpdateAndPackAllocateNothing) {
  BatchConfig c;
  c.block_size = 16;
  c.num_blocks = 400;
  c.max_seqs = 32;
  c.max_batch = 16;
  c.max_blocks_per_seq = 16;
  c.max_tokens_per_step = 256;
  c.max_forks_per_step = 3;
  BlockTableManager m(c);
  kvpager::batch::testing::RandomSteps gen(c, 3);
  std::vector<int32_t> buffer(MetadataLayout::make(c.max_batch, c.max_tokens_per_step,
                                                   c.max_batch * c.max_blocks_per_seq,
                                                   c.max_blocks_per_seq)
                                  .total_ints);
  long during = 0, steps = 0;
  for (int i = 0; i < 2000; ++i) {
    const Step& step = gen.make(m.lengths());
    const long before = g_allocations.load();
    try {
      m.update(step);
      m.pack(step, buffer);
      ++steps;
    } catch (const OutOfMemory&) {
      continue;  // building the error message allocates; not the hot path
    }
    during += g_allocations.load() - before;
  }
  EXPECT_EQ(during, 0) << "allocations over " << steps << " steps";
  EXPECT_GT(steps, 1000);
  EXPECT_GT(g_allocations.load(), 0) << "the counting operator new is not in use";
}
