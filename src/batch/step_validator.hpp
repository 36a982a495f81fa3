#pragma once
// Checks a Step against the rules in step.hpp and the lengths of the live sequences, and
// computes its totals. Shared by the CPU manager and the GPU preparer's host side, so both
// reject exactly the same steps. O(batch + finished + forks), no allocation after
// construction. Throws InvalidArgument naming the offending entry; changes nothing it is given.
#include <cstdint>
#include <span>
#include <vector>

#include "kvpager/batch/batch_config.hpp"
#include "kvpager/batch/block_table_manager.hpp"
#include "kvpager/batch/step.hpp"

namespace kvpager::batch {

class StepValidator {
 public:
  explicit StepValidator(const BatchConfig& config);
  // lens[s]: length of live sequence s, -1 when not live.
  StepTotals check(const Step& step, std::span<const int32_t> lens);

 private:
  enum Role : uint8_t { kInBatch = 1, kFinished = 2, kParent = 4, kChild = 8 };
  uint8_t& role(int32_t seq);
  int32_t child_len(int32_t seq) const { return child_len_[static_cast<size_t>(seq)]; }

  BatchConfig config_;
  uint32_t epoch_ = 0;
  std::vector<uint32_t> epoch_of_;  // role_[s] is valid when epoch_of_[s] == epoch_
  std::vector<uint8_t> role_;
  std::vector<int32_t> child_len_;  // length a fork child gets in this step
};

}  // namespace kvpager::batch
