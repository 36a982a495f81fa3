#include "kvpager/batch/gpu_batch_preparer.hpp"

#include <bit>
#include <cstddef>
#include <cstring>
#include <string>

#include "kvpager/batch/cuda_resources.hpp"
#include "kvpager/common/error.hpp"
#include "step_validator.hpp"
#ifdef KVPAGER_BATCH_HAVE_KERNELS
#include "gpu_batch_kernels.hpp"
#endif

namespace kvpager::batch {

#ifndef KVPAGER_BATCH_HAVE_KERNELS

bool gpu_kernels_built() {
  return false;
}

struct GpuBatchPreparer::Impl {
  BatchConfig config;
};

GpuBatchPreparer::GpuBatchPreparer(const BatchConfig&) {
  throw Error("GPU batch preparer: kvpager was built without CUDA kernels (no nvcc)");
}
GpuBatchPreparer::~GpuBatchPreparer() = default;
StepTotals GpuBatchPreparer::update(const Step&) {
  return {};
}
void GpuBatchPreparer::pack() {}
StepTotals GpuBatchPreparer::prepare(const Step&) {
  return {};
}
void GpuBatchPreparer::capture_graph() {}
StepTotals GpuBatchPreparer::prepare_graph(const Step&) {
  return {};
}
AttentionMetadata GpuBatchPreparer::metadata() const {
  return {};
}
void GpuBatchPreparer::synchronize() {}
MetadataSnapshot GpuBatchPreparer::download() {
  return {};
}
size_t GpuBatchPreparer::free_blocks() {
  return 0;
}
std::vector<int32_t> GpuBatchPreparer::blocks(int32_t) {
  return {};
}
int32_t GpuBatchPreparer::length(int32_t) const {
  return -1;
}
DescriptorPath GpuBatchPreparer::last_descriptor_path() const {
  return DescriptorPath::kCopied;
}
cudaStream_t GpuBatchPreparer::stream() const {
  return nullptr;
}
const BatchConfig& GpuBatchPreparer::config() const {
  return impl_->config;
}

#else

bool gpu_kernels_built() {
  return true;
}

namespace {
constexpr int kRing = 4;  // descriptors staged ahead of the GPU before update() waits

MetadataLayout max_layout(const BatchConfig& c) {
  return MetadataLayout::make(c.max_batch, c.max_tokens_per_step,
                              c.max_batch * c.max_blocks_per_seq, c.max_blocks_per_seq);
}
// Room for the largest descriptor of the config, padded for the fused kernel's 16-byte reads.
size_t descriptor_ints(const BatchConfig& c) {
  const int64_t n = gpu::kDescHeaderInts + 3 * static_cast<int64_t>(c.max_batch) + c.max_seqs +
                    3 * static_cast<int64_t>(c.max_forks_per_step);
  return static_cast<size_t>((n + 3) / 4 * 4);
}
// Ints of the descriptor of `step` (after validation, so every size is within the config).
int32_t descriptor_size(const Step& step) {
  return static_cast<int32_t>(gpu::kDescHeaderInts + 3 * step.batch.size() + step.finished.size() +
                              3 * step.forks.size());
}
// The descriptor copies SeqStep and Fork arrays as int32 triples.
static_assert(sizeof(SeqStep) == 3 * sizeof(int32_t) && offsetof(SeqStep, seq) == 0 &&
              offsetof(SeqStep, prior_len) == 4 && offsetof(SeqStep, new_tokens) == 8);
static_assert(sizeof(Fork) == 3 * sizeof(int32_t) && offsetof(Fork, parent) == 0 &&
              offsetof(Fork, child) == 4 && offsetof(Fork, prefix_len) == 8);

// Writes the descriptor of a validated step into `d` (room for descriptor_size(step) ints).
void write_descriptor(const Step& step, const StepTotals& totals, int32_t* d) {
  d[gpu::kDescBatch] = totals.batch;
  d[gpu::kDescFinished] = static_cast<int32_t>(step.finished.size());
  d[gpu::kDescForks] = static_cast<int32_t>(step.forks.size());
  d[gpu::kDescTokens] = totals.num_tokens;
  d[gpu::kDescNewBlocks] = totals.new_blocks;
  d[gpu::kDescKvIndices] = totals.num_kv_indices;
  d[gpu::kDescMaxQ] = totals.max_seqlen_q;
  d[gpu::kDescMaxK] = totals.max_seqlen_k;
  int32_t* w = d + gpu::kDescHeaderInts;
  if (!step.batch.empty()) std::memcpy(w, step.batch.data(), step.batch.size_bytes());
  w += 3 * step.batch.size();
  if (!step.finished.empty()) std::memcpy(w, step.finished.data(), step.finished.size_bytes());
  w += step.finished.size();
  if (!step.forks.empty()) std::memcpy(w, step.forks.data(), step.forks.size_bytes());
}
const BatchConfig& checked(const BatchConfig& c) {
  c.validate();
  if (!cuda_device_present()) throw Error("GPU batch preparer: no CUDA device is present");
  return c;
}
size_t ints(int64_t n) {
  return static_cast<size_t>(n) * sizeof(int32_t);
}
}  // namespace

struct GpuBatchPreparer::Impl {
  explicit Impl(const BatchConfig& c)
      : config(checked(c)),
        validator(config),
        layout(max_layout(config)),
        desc_ints(descriptor_ints(config)),
        shadow(static_cast<size_t>(config.max_seqs), -1),
        staging(ints(static_cast<int64_t>(desc_ints) * (kRing + 1))),
        desc_dev(ints(static_cast<int64_t>(desc_ints))),
        free_stack(ints(config.num_blocks)),
        refcount(ints(config.num_blocks)),
        rows(ints(static_cast<int64_t>(config.max_seqs) * config.max_blocks_per_seq)),
        lens(ints(config.max_seqs)),
        state(ints(gpu::kStateInts)),
        alloc_ids(ints(config.max_tokens_per_step / config.block_size + config.max_batch)),
        alloc_off(ints(config.max_batch)),
        out(layout.total_bytes()) {
    t.free_stack = free_stack.data<int32_t>();
    t.refcount = refcount.data<int32_t>();
    t.rows = rows.data<int32_t>();
    t.lens = lens.data<int32_t>();
    t.state = state.data<int32_t>();
    t.alloc_ids = alloc_ids.data<int32_t>();
    t.alloc_off = alloc_off.data<int32_t>();
    t.block_size = config.block_size;
    t.shift = std::countr_zero(static_cast<uint32_t>(config.block_size));
    t.width = config.max_blocks_per_seq;
    t.num_blocks = config.num_blocks;
    t.max_seqs = config.max_seqs;
    int32_t* base = out.data<int32_t>();
    o.header = base + layout.header;
    o.seq_lens = base + layout.seq_lens;
    o.cu_seqlens_q = base + layout.cu_seqlens_q;
    o.cu_seqlens_k = base + layout.cu_seqlens_k;
    o.paged_kv_indptr = base + layout.paged_kv_indptr;
    o.paged_kv_last_page_len = base + layout.paged_kv_last_page_len;
    o.slot_mapping = base + layout.slot_mapping;
    o.block_table = base + layout.block_table;
    o.paged_kv_indices = base + layout.paged_kv_indices;
    check_cuda(cudaMemsetAsync(rows.data(), 0, rows.bytes(), stream.get()), "cudaMemsetAsync");
    check_cuda(cudaMemsetAsync(out.data(), 0, out.bytes(), stream.get()), "cudaMemsetAsync");
    check_cuda(gpu::launch_init(t, stream.get()), "init_kernel launch");
    stream.synchronize();
  }

  // Waits until staging slot `slot` is free (its last copy has been done); returns it.
  int32_t* claim(int slot) {
    if (pending[slot]) done[slot].synchronize();
    pending[slot] = false;
    return staged(slot);
  }

  // Enqueues the copy of `n` descriptor ints from staging slot `slot` to desc_dev.
  void copy(int slot, size_t n) {
    cudaStream_t s = stream.get();
    check_cuda(cudaMemcpyAsync(desc_dev.data(), staged(slot), ints(static_cast<int64_t>(n)),
                               cudaMemcpyHostToDevice, s),
               "cudaMemcpyAsync");
    done[slot].record(s);
    pending[slot] = true;
  }

  // The host shadow follows the step (same order as the device).
  void apply_to_shadow(const Step& step, const StepTotals& totals) {
    for (const Fork& f : step.forks)
      shadow[static_cast<size_t>(f.child)] = f.prefix_len / config.block_size * config.block_size;
    for (const SeqStep& e : step.batch)
      shadow[static_cast<size_t>(e.seq)] = e.prior_len + e.new_tokens;
    for (int32_t seq : step.finished) shadow[static_cast<size_t>(seq)] = -1;
    last = totals;
  }

  int32_t* staged(int slot) {
    return staging.data<int32_t>() + static_cast<size_t>(slot) * desc_ints;
  }

  BatchConfig config;
  StepValidator validator;
  MetadataLayout layout;
  size_t desc_ints;
  std::vector<int32_t> shadow;
  CudaStream stream;
  PinnedBuffer staging;  // kRing eager slots + 1 graph slot
  CudaEvent done[kRing + 1];
  bool pending[kRing + 1] = {};
  uint64_t serial = 0;
  DeviceBuffer desc_dev, free_stack, refcount, rows, lens, state, alloc_ids, alloc_off, out;
  gpu::Tables t{};
  gpu::Outputs o{};
  CudaGraphExec graph;
  StepTotals last;
  DescriptorPath path = DescriptorPath::kKernelParameters;
  // The descriptor of an eager fused step, passed as kernel parameters (read by the launch).
  alignas(16) int32_t param_desc[gpu::kMaxParamDescInts]{};  // scratch, rewritten per step
};

GpuBatchPreparer::GpuBatchPreparer(const BatchConfig& config)
    : impl_(std::make_unique<Impl>(config)) {}
GpuBatchPreparer::~GpuBatchPreparer() = default;

StepTotals GpuBatchPreparer::update(const Step& step) {
  Impl& m = *impl_;
  const StepTotals totals = m.validator.check(step, m.shadow);
  const int slot = static_cast<int>(m.serial++ % kRing);
  write_descriptor(step, totals, m.claim(slot));
  m.copy(slot, static_cast<size_t>(descriptor_size(step)));
  check_cuda(
      gpu::launch_update(m.t, m.o, m.desc_dev.data<int32_t>(), m.config.max_batch, m.stream.get()),
      "update_kernel launch");
  m.path = DescriptorPath::kCopied;
  m.apply_to_shadow(step, totals);
  return totals;
}

void GpuBatchPreparer::pack() {
  Impl& m = *impl_;
  check_cuda(
      gpu::launch_pack(m.t, m.o, m.desc_dev.data<int32_t>(), m.config.max_batch, m.stream.get()),
      "pack_kernel launch");
}

StepTotals GpuBatchPreparer::prepare(const Step& step) {
  Impl& m = *impl_;
  const StepTotals totals = m.validator.check(step, m.shadow);
  const int32_t n = descriptor_size(step);
  if (n <= gpu::kMaxParamDescInts) {  // the usual case: no copy, one launch
    write_descriptor(step, totals, m.param_desc);
    check_cuda(gpu::launch_step_params(m.t, m.o, m.param_desc, n, m.stream.get()),
               "step_kernel launch");
    m.path = DescriptorPath::kKernelParameters;
  } else {  // too big for the parameters: pinned slot, one copy, one launch
    const int slot = static_cast<int>(m.serial++ % kRing);
    write_descriptor(step, totals, m.claim(slot));
    m.copy(slot, static_cast<size_t>(n));
    check_cuda(
        gpu::launch_step_global(m.t, m.o, m.desc_dev.data<int32_t>(), totals.batch, m.stream.get()),
        "step_kernel launch");
    m.path = DescriptorPath::kCopied;
  }
  m.apply_to_shadow(step, totals);
  return totals;
}

void GpuBatchPreparer::capture_graph() {
  Impl& m = *impl_;
  m.stream.synchronize();
  m.graph = CudaGraphExec::capture(m.stream.get(), [&](cudaStream_t s) {
    check_cuda(cudaMemcpyAsync(m.desc_dev.data(), m.staged(kRing),
                               ints(static_cast<int64_t>(m.desc_ints)), cudaMemcpyHostToDevice, s),
               "cudaMemcpyAsync");
    check_cuda(gpu::launch_step_global(m.t, m.o, m.desc_dev.data<int32_t>(), m.config.max_batch, s),
               "step_kernel launch");
  });
}

StepTotals GpuBatchPreparer::prepare_graph(const Step& step) {
  Impl& m = *impl_;
  if (!m.graph) throw StateError("GPU batch preparer: prepare_graph() before capture_graph()");
  const StepTotals totals = m.validator.check(step, m.shadow);
  write_descriptor(step, totals, m.claim(kRing));
  m.graph.launch(m.stream.get());
  m.done[kRing].record(m.stream.get());
  m.pending[kRing] = true;
  m.path = DescriptorPath::kCopied;
  m.apply_to_shadow(step, totals);
  return totals;
}

AttentionMetadata GpuBatchPreparer::metadata() const {
  const Impl& m = *impl_;
  AttentionMetadata v = AttentionMetadata::over(m.out.data<int32_t>(), m.layout, true);
  v.batch = m.last.batch;
  v.num_tokens = m.last.num_tokens;
  v.num_kv_indices = m.last.num_kv_indices;
  v.max_seqlen_q = m.last.max_seqlen_q;
  v.max_seqlen_k = m.last.max_seqlen_k;
  v.block_size = m.config.block_size;
  return v;
}

void GpuBatchPreparer::synchronize() {
  Impl& m = *impl_;
  m.stream.synchronize();
  int32_t st[gpu::kStateInts];
  check_cuda(cudaMemcpy(st, m.state.data(), sizeof st, cudaMemcpyDeviceToHost), "cudaMemcpy");
  if (st[gpu::kError] == 0) return;
  // The failing step and every later one changed nothing on the device: take the lengths back
  // from there, clear the error, and report.
  check_cuda(cudaMemcpy(m.shadow.data(), m.lens.data(), m.lens.bytes(), cudaMemcpyDeviceToHost),
             "cudaMemcpy");
  const int32_t zero = 0;
  check_cuda(
      cudaMemcpy(m.state.data<int32_t>() + gpu::kError, &zero, sizeof zero, cudaMemcpyHostToDevice),
      "cudaMemcpy");
  m.last = StepTotals{};
  throw OutOfMemory("out of KV blocks on the GPU: " + std::to_string(st[gpu::kFreeTop]) +
                    " free of " + std::to_string(m.config.num_blocks) +
                    "; the step that ran out and the steps after it were not applied");
}

MetadataSnapshot GpuBatchPreparer::download() {
  synchronize();
  Impl& m = *impl_;
  std::vector<int32_t> host(m.layout.total_ints);
  check_cuda(cudaMemcpy(host.data(), m.out.data(), m.layout.total_bytes(), cudaMemcpyDeviceToHost),
             "cudaMemcpy");
  AttentionMetadata v = AttentionMetadata::over(host.data(), m.layout, false);
  v.batch = host[m.layout.header + 0];
  v.num_tokens = host[m.layout.header + 1];
  v.num_kv_indices = host[m.layout.header + 2];
  return snapshot(v);
}

size_t GpuBatchPreparer::free_blocks() {
  synchronize();
  int32_t top = 0;
  check_cuda(cudaMemcpy(&top, impl_->state.data<int32_t>() + gpu::kFreeTop, sizeof top,
                        cudaMemcpyDeviceToHost),
             "cudaMemcpy");
  return static_cast<size_t>(top);
}

std::vector<int32_t> GpuBatchPreparer::blocks(int32_t seq) {
  synchronize();
  const int32_t len = length(seq);
  std::vector<int32_t> row(
      len < 0 ? 0 : static_cast<size_t>(blocks_for(len, impl_->config.block_size)));
  if (!row.empty())
    check_cuda(cudaMemcpy(row.data(),
                          impl_->rows.data<int32_t>() +
                              static_cast<size_t>(seq) * impl_->config.max_blocks_per_seq,
                          row.size() * sizeof(int32_t), cudaMemcpyDeviceToHost),
               "cudaMemcpy");
  return row;
}

int32_t GpuBatchPreparer::length(int32_t seq) const {
  if (seq < 0 || seq >= impl_->config.max_seqs)
    throw InvalidArgument("sequence " + std::to_string(seq) + " out of range");
  return impl_->shadow[static_cast<size_t>(seq)];
}

cudaStream_t GpuBatchPreparer::stream() const {
  return impl_->stream.get();
}
DescriptorPath GpuBatchPreparer::last_descriptor_path() const {
  return impl_->path;
}
const BatchConfig& GpuBatchPreparer::config() const {
  return impl_->config;
}

#endif

}  // namespace kvpager::batch
