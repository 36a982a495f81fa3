#pragma once
// The CPU implementation: per-sequence block tables kept incrementally (a row per sequence
// slot, appended to as the sequence grows), reference-counted sharing for forks, and packing
// of a step's attention metadata into caller-provided host memory.
//
// Promises: update() validates the whole step first and either applies all of it or throws and
// changes nothing (InvalidArgument for bad input, OutOfMemory from the block source). No
// allocation on the hot path: every table is sized from BatchConfig at construction; update
// and pack are O(batch + new blocks + freed blocks) and O(batch * width + tokens). Not
// thread-safe; one thread drives a manager.
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "kvpager/batch/attention_metadata.hpp"
#include "kvpager/batch/batch_config.hpp"
#include "kvpager/batch/block_source.hpp"
#include "kvpager/batch/step.hpp"

namespace kvpager::batch {

class StepValidator;

// Sizes of one step, known on the host before any metadata is built.
struct StepTotals {
  int32_t batch = 0;
  int32_t num_tokens = 0;
  int32_t num_kv_indices = 0;  // sum over rows of ceil(len / block_size)
  int32_t new_blocks = 0;      // blocks the step takes from the source
  int32_t max_seqlen_q = 0;
  int32_t max_seqlen_k = 0;
};

class BlockTableManager {
 public:
  // Owns a FreeListBlockSource of config.num_blocks blocks.
  explicit BlockTableManager(const BatchConfig& config);
  // Uses `source` (not owned; must outlive the manager). Its id_limit() sizes the refcounts.
  BlockTableManager(const BatchConfig& config, BlockSource& source);
  ~BlockTableManager();
  BlockTableManager(const BlockTableManager&) = delete;
  BlockTableManager& operator=(const BlockTableManager&) = delete;

  // Applies one step (order and rules in step.hpp). Returns its totals.
  StepTotals update(const Step& step);

  // Layout of the metadata of the step last passed to update(): compact, batch rows only.
  MetadataLayout layout() const;
  // Writes the metadata of the step last passed to update() (pass the same step) into `out`
  // (host memory, at least layout().total_ints); returns a host view over `out`.
  // InvalidArgument if `out` is too small or `step` is not the last one applied.
  AttentionMetadata pack(const Step& step, std::span<int32_t> out) const;

  const BatchConfig& config() const { return config_; }
  const StepTotals& last_totals() const { return last_; }
  bool live(int32_t seq) const;
  int32_t length(int32_t seq) const;                   // -1 when not live
  std::span<const int32_t> blocks(int32_t seq) const;  // the sequence's row, ceil(len / bs) ids
  int32_t refcount(int32_t block) const;
  size_t free_blocks() const { return source_->free_blocks(); }
  std::span<const int32_t> lengths() const { return lens_; }  // per slot, -1 when not live

 private:
  void init();
  int32_t* row(int32_t seq) { return rows_.data() + static_cast<size_t>(seq) * width_; }
  const int32_t* row(int32_t seq) const { return rows_.data() + static_cast<size_t>(seq) * width_; }

  BatchConfig config_;
  std::unique_ptr<BlockSource> owned_source_;
  BlockSource* source_ = nullptr;
  std::unique_ptr<StepValidator> validator_;
  size_t width_ = 0;
  int shift_ = 0;                  // log2(block_size)
  std::vector<int32_t> lens_;      // per slot
  std::vector<int32_t> rows_;      // max_seqs * width
  std::vector<int32_t> refcount_;  // per block id
  std::vector<BlockId> alloc_scratch_;
  std::vector<BlockId> free_scratch_;
  StepTotals last_;
};

}  // namespace kvpager::batch
