#include "kvpager/batch/synthetic_workload.hpp"

#include <algorithm>
#include <string>

#include "kvpager/common/error.hpp"

namespace kvpager::batch {

WorkloadMode parse_workload_mode(std::string_view text) {
  if (text == "decode") return WorkloadMode::kDecode;
  if (text == "prefill") return WorkloadMode::kPrefill;
  if (text == "mixed") return WorkloadMode::kMixed;
  throw InvalidArgument("mode '" + std::string(text) + "': expected decode, prefill or mixed");
}

const char* to_string(WorkloadMode mode) {
  switch (mode) {
    case WorkloadMode::kDecode:
      return "decode";
    case WorkloadMode::kPrefill:
      return "prefill";
    case WorkloadMode::kMixed:
      return "mixed";
  }
  return "?";
}

SyntheticWorkload::SyntheticWorkload(const WorkloadConfig& c) : cfg_(c) {
  if (c.batch < 1 || c.seq_len < 1 || c.steps < 0 || c.prefill_chunk < 1 || c.decode_tokens < 1)
    throw InvalidArgument("workload: batch, seq_len, prefill_chunk, decode_tokens must be >= 1");
  const int32_t chunk = std::min(c.seq_len, c.prefill_chunk);
  int64_t max_len = c.seq_len;
  int64_t tokens = static_cast<int64_t>(c.batch) * chunk;
  switch (c.mode) {
    case WorkloadMode::kDecode:
      max_len = static_cast<int64_t>(c.seq_len) + c.steps;
      break;
    case WorkloadMode::kPrefill:
      tokens = static_cast<int64_t>(c.batch) * c.seq_len;
      break;
    case WorkloadMode::kMixed:
      max_len = static_cast<int64_t>(c.seq_len) + c.decode_tokens;
      break;
  }
  BatchConfig& b = batch_config_;
  b.block_size = c.block_size;
  b.max_batch = c.batch;
  b.max_seqs = 2 * c.batch;
  b.max_blocks_per_seq = static_cast<int32_t>(blocks_for(max_len, c.block_size));
  b.max_tokens_per_step = static_cast<int32_t>(std::min<int64_t>(tokens, INT32_MAX));
  // Blocks freed by a step serve only the next one, so up to two generations are held.
  b.num_blocks = static_cast<int32_t>(
      std::min<int64_t>(2LL * c.batch * b.max_blocks_per_seq + 1, INT32_MAX / 256));
  b.max_forks_per_step = 0;
  b.validate();

  seqs_.reserve(static_cast<size_t>(c.batch));
  batch_.reserve(static_cast<size_t>(c.batch));
  finished_.reserve(static_cast<size_t>(2 * c.batch));
  finishing_.reserve(static_cast<size_t>(2 * c.batch));
  for (int32_t s = b.max_seqs - 1; s >= 0; --s) free_slots_.push_back(s);
  if (c.mode == WorkloadMode::kPrefill) {
    setup_done_ = true;
  } else {
    for (int32_t i = 0; i < c.batch; ++i) {
      const int32_t slot = free_slots_.back();
      free_slots_.pop_back();
      // mixed: staggered decode budgets so completions spread over the steps
      seqs_.push_back({slot, 0, 1 + i % c.decode_tokens});
    }
  }
}

const Step& SyntheticWorkload::publish() {
  current_ = Step{batch_, finished_, {}};
  ++step_;
  return current_;
}

const Step& SyntheticWorkload::next_setup() {
  batch_.clear();
  finished_.clear();
  const int32_t chunk = std::min(cfg_.seq_len, cfg_.prefill_chunk);
  bool more = false;
  for (Seq& s : seqs_) {
    if (s.len >= cfg_.seq_len) continue;
    const int32_t n = std::min(chunk, cfg_.seq_len - s.len);
    batch_.push_back({s.slot, s.len, n});
    s.len += n;
    more = more || s.len < cfg_.seq_len;
  }
  setup_done_ = !more;
  return publish();
}

const Step& SyntheticWorkload::next() {
  batch_.clear();
  finished_.clear();
  switch (cfg_.mode) {
    case WorkloadMode::kDecode:
      for (Seq& s : seqs_) {
        batch_.push_back({s.slot, s.len, 1});
        s.len += 1;
      }
      break;
    case WorkloadMode::kPrefill:
      for (const Seq& s : seqs_) {
        finished_.push_back(s.slot);
        free_slots_.push_back(s.slot);
      }
      // Slots just finished are reused only from the step after next (still live now).
      seqs_.clear();
      for (int32_t i = 0; i < cfg_.batch; ++i) {
        const int32_t slot = free_slots_[static_cast<size_t>(i)];
        seqs_.push_back({slot, cfg_.seq_len, 0});
        batch_.push_back({slot, 0, cfg_.seq_len});
      }
      // The admitted slots leave the free list; the finished ones stay (at its end).
      free_slots_.erase(free_slots_.begin(), free_slots_.begin() + cfg_.batch);
      break;
    case WorkloadMode::kMixed: {
      const int32_t chunk = std::min(cfg_.seq_len, cfg_.prefill_chunk);
      for (int32_t slot : finishing_) {
        finished_.push_back(slot);
      }
      for (Seq& s : seqs_) {
        if (s.budget == 0) {  // finished last step: a new sequence takes its place
          s.slot = free_slots_.back();
          free_slots_.pop_back();
          s.len = 0;
          s.budget = cfg_.decode_tokens;
        }
        const int32_t n = s.len < cfg_.seq_len ? std::min(chunk, cfg_.seq_len - s.len) : 1;
        batch_.push_back({s.slot, s.len, n});
        if (s.len >= cfg_.seq_len) --s.budget;
        s.len += n;
      }
      // Finished slots return to the pool after this step (they are live until it ends).
      for (int32_t slot : finishing_) free_slots_.insert(free_slots_.begin(), slot);
      finishing_.clear();
      for (const Seq& s : seqs_)
        if (s.budget == 0) finishing_.push_back(s.slot);
      break;
    }
  }
  return publish();
}

}  // namespace kvpager::batch
