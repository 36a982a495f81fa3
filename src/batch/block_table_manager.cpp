#include "kvpager/batch/block_table_manager.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <string>

#include "kvpager/batch/free_list_block_source.hpp"
#include "kvpager/common/error.hpp"
#include "step_validator.hpp"

namespace kvpager::batch {

namespace {
std::unique_ptr<BlockSource> make_free_list(const BatchConfig& config) {
  config.validate();
  return std::make_unique<FreeListBlockSource>(config.num_blocks);
}
}  // namespace

BlockTableManager::BlockTableManager(const BatchConfig& config)
    : config_(config), owned_source_(make_free_list(config)) {
  source_ = owned_source_.get();
  init();
}

BlockTableManager::BlockTableManager(const BatchConfig& config, BlockSource& source)
    : config_(config), source_(&source) {
  config_.validate();
  init();
}

BlockTableManager::~BlockTableManager() = default;

void BlockTableManager::init() {
  validator_ = std::make_unique<StepValidator>(config_);
  width_ = static_cast<size_t>(config_.max_blocks_per_seq);
  shift_ = std::countr_zero(static_cast<uint32_t>(config_.block_size));
  lens_.assign(static_cast<size_t>(config_.max_seqs), -1);
  rows_.assign(static_cast<size_t>(config_.max_seqs) * width_, 0);
  refcount_.assign(source_->id_limit(), 0);
  // A row grows by at most floor((n - 1) / bs) + 1 blocks for n new tokens.
  alloc_scratch_.resize(static_cast<size_t>(config_.max_tokens_per_step / config_.block_size) +
                        static_cast<size_t>(config_.max_batch));
  free_scratch_.resize(width_);
}

StepTotals BlockTableManager::update(const Step& step) {
  const StepTotals t = validator_->check(step, lens_);
  const auto n_new = static_cast<size_t>(t.new_blocks);
  source_->alloc(n_new, std::span(alloc_scratch_));  // all or nothing; may throw OutOfMemory
  for (size_t k = 0; k < n_new; ++k) {
    const int32_t b = alloc_scratch_[k].value;
    if (b < 0 || static_cast<size_t>(b) >= refcount_.size() || refcount_[static_cast<size_t>(b)]) {
      source_->free(std::span<const BlockId>(alloc_scratch_.data(), n_new));
      throw StateError("block source handed out block " + std::to_string(b) +
                       ", which is out of range or already in use");
    }
  }
  // From here on nothing can fail.
  const int32_t bs = config_.block_size;
  for (const Fork& f : step.forks) {
    const int32_t shared = f.prefix_len / bs;
    const int32_t* from = row(f.parent);
    int32_t* to = row(f.child);
    for (int32_t j = 0; j < shared; ++j) {
      to[j] = from[j];
      ++refcount_[static_cast<size_t>(from[j])];
    }
    lens_[static_cast<size_t>(f.child)] = shared * bs;
  }
  size_t taken = 0;
  for (const SeqStep& e : step.batch) {
    const int32_t len = e.prior_len + e.new_tokens;
    int32_t* r = row(e.seq);
    for (int32_t j = blocks_for(e.prior_len, bs), end = blocks_for(len, bs); j < end; ++j) {
      const int32_t b = alloc_scratch_[taken++].value;
      r[j] = b;
      refcount_[static_cast<size_t>(b)] = 1;
    }
    lens_[static_cast<size_t>(e.seq)] = len;
  }
  for (int32_t seq : step.finished) {
    const int32_t* r = row(seq);
    size_t freed = 0;
    for (int32_t j = 0, end = blocks_for(lens_[static_cast<size_t>(seq)], bs); j < end; ++j)
      if (--refcount_[static_cast<size_t>(r[j])] == 0) free_scratch_[freed++] = BlockId(r[j]);
    source_->free(std::span<const BlockId>(free_scratch_.data(), freed));
    lens_[static_cast<size_t>(seq)] = -1;
  }
  last_ = t;
  return t;
}

MetadataLayout BlockTableManager::layout() const {
  return MetadataLayout::make(last_.batch, last_.num_tokens, last_.num_kv_indices,
                              config_.max_blocks_per_seq);
}

AttentionMetadata BlockTableManager::pack(const Step& step, std::span<int32_t> out) const {
  const MetadataLayout l = layout();
  if (out.size() < l.total_ints)
    throw InvalidArgument("pack: output holds " + std::to_string(out.size()) + " ints, needs " +
                          std::to_string(l.total_ints));
  if (step.batch.size() != static_cast<size_t>(last_.batch))
    throw InvalidArgument("pack: the step is not the one last applied by update()");
  int32_t* base = out.data();
  const int32_t bs = config_.block_size;
  const int32_t mask = bs - 1;
  int32_t* h = base + l.header;
  h[0] = last_.batch;
  h[1] = last_.num_tokens;
  h[2] = last_.num_kv_indices;
  h[3] = last_.max_seqlen_q;
  h[4] = last_.max_seqlen_k;
  h[5] = bs;
  h[6] = l.width;
  h[7] = 0;
  int32_t* seq_lens = base + l.seq_lens;
  int32_t* cu_q = base + l.cu_seqlens_q;
  int32_t* cu_k = base + l.cu_seqlens_k;
  int32_t* indptr = base + l.paged_kv_indptr;
  int32_t* last_page = base + l.paged_kv_last_page_len;
  int32_t* slots = base + l.slot_mapping;
  int32_t* table = base + l.block_table;
  int32_t* indices = base + l.paged_kv_indices;
  cu_q[0] = cu_k[0] = indptr[0] = 0;
  for (size_t i = 0; i < step.batch.size(); ++i) {
    const SeqStep& e = step.batch[i];
    const int32_t len = e.prior_len + e.new_tokens;
    if (e.seq < 0 || e.seq >= config_.max_seqs || lens_[static_cast<size_t>(e.seq)] != len)
      throw InvalidArgument("pack: the step is not the one last applied by update()");
    const int32_t nb = blocks_for(len, bs);
    const int32_t* r = row(e.seq);
    seq_lens[i] = len;
    cu_q[i + 1] = cu_q[i] + e.new_tokens;
    cu_k[i + 1] = cu_k[i] + len;
    indptr[i + 1] = indptr[i] + nb;
    last_page[i] = len - (nb - 1) * bs;
    int32_t* trow = table + i * width_;
    std::memcpy(trow, r, static_cast<size_t>(nb) * sizeof(int32_t));
    std::memset(trow + nb, 0, (width_ - static_cast<size_t>(nb)) * sizeof(int32_t));
    std::memcpy(indices + indptr[i], r, static_cast<size_t>(nb) * sizeof(int32_t));
    int32_t* s = slots + cu_q[i];
    for (int32_t t = 0, pos = e.prior_len; t < e.new_tokens; ++t, ++pos)
      s[t] = (r[pos >> shift_] << shift_) + (pos & mask);
  }
  AttentionMetadata m = AttentionMetadata::over(base, l, false);
  m.batch = last_.batch;
  m.num_tokens = last_.num_tokens;
  m.num_kv_indices = last_.num_kv_indices;
  m.max_seqlen_q = last_.max_seqlen_q;
  m.max_seqlen_k = last_.max_seqlen_k;
  m.block_size = bs;
  return m;
}

bool BlockTableManager::live(int32_t seq) const {
  return length(seq) >= 0;
}

int32_t BlockTableManager::length(int32_t seq) const {
  if (seq < 0 || seq >= config_.max_seqs)
    throw InvalidArgument("sequence " + std::to_string(seq) + " out of range");
  return lens_[static_cast<size_t>(seq)];
}

std::span<const int32_t> BlockTableManager::blocks(int32_t seq) const {
  const int32_t len = length(seq);
  return {row(seq), static_cast<size_t>(len < 0 ? 0 : blocks_for(len, config_.block_size))};
}

int32_t BlockTableManager::refcount(int32_t block) const {
  if (block < 0 || static_cast<size_t>(block) >= refcount_.size())
    throw InvalidArgument("block " + std::to_string(block) + " out of range");
  return refcount_[static_cast<size_t>(block)];
}

}  // namespace kvpager::batch
