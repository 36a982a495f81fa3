#pragma once
// Test helper: random but valid steps (admissions, prefill chunks, decodes, completions, forks)
// drawn from a seeded generator, given the current sequence lengths. Deterministic per seed.
#include <algorithm>
#include <cstdint>
#include <random>
#include <span>
#include <unordered_map>
#include <vector>

#include "kvpager/batch/batch_config.hpp"
#include "kvpager/batch/step.hpp"

namespace kvpager::batch::testing {

class RandomSteps {
 public:
  RandomSteps(const BatchConfig& config, uint64_t seed) : c_(config), rng_(seed) {
    used_.resize(static_cast<size_t>(c_.max_seqs));
  }

  // lens[s]: length of live sequence s, -1 when not live.
  const Step& make(std::span<const int32_t> lens) {
    batch_.clear();
    finished_.clear();
    forks_.clear();
    std::fill(used_.begin(), used_.end(), 0);
    const int32_t capacity = c_.max_blocks_per_seq * c_.block_size;
    std::vector<int32_t> live, free;
    for (int32_t s = 0; s < c_.max_seqs; ++s)
      (lens[static_cast<size_t>(s)] >= 0 ? live : free).push_back(s);
    std::shuffle(live.begin(), live.end(), rng_);
    std::shuffle(free.begin(), free.end(), rng_);
    for (int32_t s : live) {  // completions, and sequences that are full
      if (chance(0.08) || lens[static_cast<size_t>(s)] >= capacity) {
        finished_.push_back(s);
        used_[static_cast<size_t>(s)] = 1;
      }
    }
    size_t next_free = 0;
    const int n_forks =
        c_.max_forks_per_step > 0 && chance(0.25) ? uniform(1, c_.max_forks_per_step) : 0;
    for (int k = 0; k < n_forks && next_free < free.size() && !live.empty(); ++k) {
      const int32_t parent =
          live[static_cast<size_t>(uniform(0, static_cast<int>(live.size()) - 1))];
      if (used_[static_cast<size_t>(parent)] & (kFin | kChild)) continue;
      const int32_t child = free[next_free++];
      const int32_t len = lens[static_cast<size_t>(parent)];
      forks_.push_back({parent, child, uniform(0, len)});
      used_[static_cast<size_t>(parent)] |= kParent;
      used_[static_cast<size_t>(child)] = kChild;
      child_len_[child] = forks_.back().prefix_len / c_.block_size * c_.block_size;
    }
    int64_t tokens = 0;
    auto add = [&](int32_t seq, int32_t prior) {
      if (static_cast<int32_t>(batch_.size()) >= c_.max_batch) return;
      int32_t n = chance(0.6) ? 1 : uniform(1, std::max(2, 3 * c_.block_size));
      n = std::min(n, capacity - prior);
      if (n < 1 || tokens + n > c_.max_tokens_per_step) return;
      tokens += n;
      batch_.push_back({seq, prior, n});
    };
    for (const Fork& f : forks_)
      if (chance(0.7)) add(f.child, child_len_[f.child]);
    for (int32_t s : live)
      if (!(used_[static_cast<size_t>(s)] & kFin) && chance(0.7))
        add(s, lens[static_cast<size_t>(s)]);
    const int admits = uniform(0, 3);
    for (int k = 0; k < admits && next_free < free.size(); ++k) add(free[next_free++], 0);
    std::shuffle(batch_.begin(), batch_.end(), rng_);
    step_ = Step{batch_, finished_, forks_};
    return step_;
  }

  // A step that only finishes about a third of the live sequences (what a scheduler does when
  // a step was refused for want of blocks).
  const Step& make_release(std::span<const int32_t> lens) {
    batch_.clear();
    finished_.clear();
    forks_.clear();
    for (int32_t s = 0; s < c_.max_seqs; ++s)
      if (lens[static_cast<size_t>(s)] >= 0 && chance(0.35)) finished_.push_back(s);
    step_ = Step{batch_, finished_, forks_};
    return step_;
  }

  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  int uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  std::mt19937_64& rng() { return rng_; }

 private:
  enum : uint8_t { kFin = 1, kParent = 2, kChild = 4 };
  BatchConfig c_;
  std::mt19937_64 rng_;
  std::vector<uint8_t> used_;
  std::vector<SeqStep> batch_;
  std::vector<int32_t> finished_;
  std::vector<Fork> forks_;
  std::unordered_map<int32_t, int32_t> child_len_;
  Step step_;
};

}  // namespace kvpager::batch::testing
