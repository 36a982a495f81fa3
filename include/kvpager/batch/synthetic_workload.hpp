#pragma once
// Deterministic step sequences for `kvpager bench prepare-batch` and the tests: the same
// WorkloadConfig always yields the same steps, so the CPU and GPU paths can be fed identical
// input from two instances.
//   decode:  `batch` sequences prefilled to `seq_len` (setup), then every step decodes one
//            token for each of them.
//   prefill: every step admits `batch` new sequences with `seq_len`-token prompts and
//            finishes the ones admitted the step before.
//   mixed:   `batch` sequences in flight; each prefills `seq_len` tokens in chunks of
//            `prefill_chunk`, decodes `decode_tokens` tokens and finishes; its slot is refilled
//            by a new sequence the next step. Setup staggers them so every step mixes
//            prefill chunks, decodes, completions and admissions.
// No allocation in next() after construction. Not thread-safe.
#include <cstdint>
#include <string_view>
#include <vector>

#include "kvpager/batch/batch_config.hpp"
#include "kvpager/batch/step.hpp"

namespace kvpager::batch {

enum class WorkloadMode { kDecode, kPrefill, kMixed };

// "decode" | "prefill" | "mixed"; InvalidArgument otherwise.
WorkloadMode parse_workload_mode(std::string_view text);
const char* to_string(WorkloadMode mode);

struct WorkloadConfig {
  WorkloadMode mode = WorkloadMode::kDecode;
  int32_t batch = 16;
  int32_t seq_len = 128;
  int32_t block_size = 16;
  int32_t steps = 100;          // steps after setup (next() may be called this often)
  int32_t prefill_chunk = 256;  // mixed: tokens per prefill chunk; setup chunks too
  int32_t decode_tokens = 16;   // mixed: tokens decoded before a sequence finishes
};

class SyntheticWorkload {
 public:
  explicit SyntheticWorkload(const WorkloadConfig& config);  // InvalidArgument on bad sizes

  // A BatchConfig every step of this workload fits.
  const BatchConfig& batch_config() const { return batch_config_; }
  // Steps that bring the workload to its steady state (run untimed, before next()).
  bool setup_done() const { return setup_done_; }
  const Step& next_setup();
  // The next steady-state step; the reference stays valid until the next call.
  const Step& next();

 private:
  struct Seq {
    int32_t slot = -1;
    int32_t len = 0;
    int32_t budget = 0;  // decode tokens left (mixed)
  };
  const Step& publish();

  WorkloadConfig cfg_;
  BatchConfig batch_config_;
  bool setup_done_ = false;
  int64_t step_ = 0;
  std::vector<Seq> seqs_;            // in flight, batch order
  std::vector<int32_t> free_slots_;  // stack of unused slot ids
  std::vector<int32_t> finishing_;   // slots to finish in the next step
  std::vector<SeqStep> batch_;
  std::vector<int32_t> finished_;
  Step current_;
};

}  // namespace kvpager::batch
