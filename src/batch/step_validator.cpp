#include "step_validator.hpp"

#include <algorithm>
#include <string>

#include "kvpager/common/error.hpp"

namespace kvpager::batch {
namespace {
[[noreturn]] void bad(const std::string& what) {
  throw InvalidArgument("prepare-batch step: " + what);
}
std::string seq_name(int32_t seq) {
  return "sequence " + std::to_string(seq);
}
std::string entry(size_t i, int32_t seq) {
  return "batch entry " + std::to_string(i) + " (" + seq_name(seq) + ")";
}
}  // namespace

StepValidator::StepValidator(const BatchConfig& config)
    : config_(config),
      epoch_of_(static_cast<size_t>(config.max_seqs), 0),
      role_(static_cast<size_t>(config.max_seqs), 0),
      child_len_(static_cast<size_t>(config.max_seqs), 0) {}

uint8_t& StepValidator::role(int32_t seq) {
  const auto s = static_cast<size_t>(seq);
  if (epoch_of_[s] != epoch_) {
    epoch_of_[s] = epoch_;
    role_[s] = 0;
  }
  return role_[s];
}

StepTotals StepValidator::check(const Step& step, std::span<const int32_t> lens) {
  const BatchConfig& c = config_;
  if (step.batch.size() > static_cast<size_t>(c.max_batch))
    bad("batch of " + std::to_string(step.batch.size()) + " sequences exceeds max_batch " +
        std::to_string(c.max_batch));
  if (step.finished.size() > static_cast<size_t>(c.max_seqs))
    bad(std::to_string(step.finished.size()) + " finished sequences exceed max_seqs " +
        std::to_string(c.max_seqs));
  if (step.forks.size() > static_cast<size_t>(c.max_forks_per_step))
    bad(std::to_string(step.forks.size()) + " forks exceed max_forks_per_step " +
        std::to_string(c.max_forks_per_step));
  if (++epoch_ == 0) {  // wrapped: forget every old mark
    std::fill(epoch_of_.begin(), epoch_of_.end(), 0);
    epoch_ = 1;
  }
  auto in_range = [&](int32_t seq, const char* what) {
    if (seq < 0 || seq >= c.max_seqs)
      bad(std::string(what) + " " + std::to_string(seq) + " is outside [0, max_seqs " +
          std::to_string(c.max_seqs) + ")");
  };
  auto live = [&](int32_t seq) { return lens[static_cast<size_t>(seq)] >= 0; };

  for (int32_t seq : step.finished) {
    in_range(seq, "finished sequence");
    if (!live(seq)) bad("finished " + seq_name(seq) + " is unknown (not live)");
    uint8_t& r = role(seq);
    if (r & kFinished) bad(seq_name(seq) + " is finished twice");
    r |= kFinished;
  }
  for (const Fork& f : step.forks) {
    in_range(f.parent, "fork parent");
    in_range(f.child, "fork child");
    if (!live(f.parent)) bad("fork parent " + seq_name(f.parent) + " is unknown (not live)");
    if (live(f.child)) bad("fork child " + seq_name(f.child) + " is already live");
    uint8_t& rp = role(f.parent);
    if (rp & (kFinished | kChild))
      bad("fork parent " + seq_name(f.parent) + " is finished or a fork child in this step");
    rp |= kParent;
    uint8_t& rc = role(f.child);
    if (rc) bad("fork child " + seq_name(f.child) + " has another role in this step");
    rc |= kChild;
    const int32_t parent_len = lens[static_cast<size_t>(f.parent)];
    if (f.prefix_len < 0 || f.prefix_len > parent_len)
      bad("fork prefix_len " + std::to_string(f.prefix_len) + " is outside [0, " +
          std::to_string(parent_len) + "] (parent length)");
    child_len_[static_cast<size_t>(f.child)] = f.prefix_len / c.block_size * c.block_size;
  }

  StepTotals t;
  t.batch = static_cast<int32_t>(step.batch.size());
  int64_t tokens = 0, kv = 0, new_blocks = 0;
  const int64_t capacity = static_cast<int64_t>(c.max_blocks_per_seq) * c.block_size;
  for (size_t i = 0; i < step.batch.size(); ++i) {
    const SeqStep& e = step.batch[i];
    in_range(e.seq, "batch sequence");
    if (e.prior_len < 0 || e.new_tokens < 1)
      bad(entry(i, e.seq) + ": prior_len " + std::to_string(e.prior_len) +
          " must be >= 0 and new_tokens " + std::to_string(e.new_tokens) + " >= 1");
    uint8_t& r = role(e.seq);
    if (r & kInBatch) bad(entry(i, e.seq) + " appears twice in the batch");
    if (r & kFinished) bad(entry(i, e.seq) + " is also finished in this step");
    r |= kInBatch;
    const int32_t len = (r & kChild) ? child_len(e.seq) : lens[static_cast<size_t>(e.seq)];
    if (len < 0 && e.prior_len != 0)
      bad(entry(i, e.seq) + " is unknown: not live, and prior_len " + std::to_string(e.prior_len) +
          " != 0 (a new sequence starts at 0)");
    if (len >= 0 && e.prior_len != len)
      bad(entry(i, e.seq) + ": prior_len " + std::to_string(e.prior_len) + " != its length " +
          std::to_string(len));
    const int64_t total = static_cast<int64_t>(e.prior_len) + e.new_tokens;
    if (total > capacity)
      bad(entry(i, e.seq) + ": length " + std::to_string(total) + " exceeds " +
          std::to_string(capacity) + " tokens (max_blocks_per_seq * block_size)");
    tokens += e.new_tokens;
    const int32_t nb_new = blocks_for(total, c.block_size);
    kv += nb_new;
    new_blocks += nb_new - blocks_for(e.prior_len, c.block_size);
    t.max_seqlen_q = std::max(t.max_seqlen_q, e.new_tokens);
    t.max_seqlen_k = std::max(t.max_seqlen_k, static_cast<int32_t>(total));
  }
  if (tokens > c.max_tokens_per_step)
    bad(std::to_string(tokens) + " new tokens exceed max_tokens_per_step " +
        std::to_string(c.max_tokens_per_step));
  t.num_tokens = static_cast<int32_t>(tokens);
  t.num_kv_indices = static_cast<int32_t>(kv);  // <= max_batch * max_blocks_per_seq
  t.new_blocks = static_cast<int32_t>(new_blocks);
  return t;
}

}  // namespace kvpager::batch
