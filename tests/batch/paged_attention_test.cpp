// The metadata drives a real paged-attention kernel (label gpu; skips without a CUDA device):
// each step's new K/V are written through slot_mapping, then every new token attends over its
// sequence through block_table (FlashAttention form) and through paged_kv_indptr/indices/
// last_page_len (FlashInfer form). Outputs are checked against dense attention computed on the
// host from each sequence's own K/V history. Both the GPU path and the CPU path (after its
// upload) are checked, each with its own KV cache, over random steps with forks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <vector>

#include "kvpager/batch/block_table_manager.hpp"
#include "kvpager/batch/cpu_batch_preparer.hpp"
#include "kvpager/batch/cuda_resources.hpp"
#include "kvpager/batch/gpu_batch_preparer.hpp"
#include "paged_attention_ref.hpp"
#include "random_steps.hpp"

using namespace kvpager;
using namespace kvpager::batch;
using namespace kvpager::batch::testing;

namespace {

constexpr int kHeads = 2;
constexpr int kDim = 32;
constexpr int kRow = kHeads * kDim;

// Dense causal attention of one query over keys/values [0, pos].
void dense_attention(const float* q, const std::vector<float>& k, const std::vector<float>& v,
                     int pos, float* out) {
  for (int h = 0; h < kHeads; ++h) {
    std::vector<double> scores(static_cast<size_t>(pos) + 1);
    double mx = -INFINITY;
    for (int p = 0; p <= pos; ++p) {
      double s = 0;
      for (int d = 0; d < kDim; ++d)
        s += static_cast<double>(q[h * kDim + d]) * k[static_cast<size_t>(p) * kRow + h * kDim + d];
      scores[static_cast<size_t>(p)] = s / std::sqrt(static_cast<double>(kDim));
      mx = std::max(mx, scores[static_cast<size_t>(p)]);
    }
    double denom = 0;
    for (double& s : scores) denom += (s = std::exp(s - mx));
    for (int d = 0; d < kDim; ++d) {
      double acc = 0;
      for (int p = 0; p <= pos; ++p)
        acc += scores[static_cast<size_t>(p)] * v[static_cast<size_t>(p) * kRow + h * kDim + d];
      out[h * kDim + d] = static_cast<float>(acc / denom);
    }
  }
}

PagedKv paged(const AttentionMetadata& m) {
  PagedKv p;
  p.batch = m.batch;
  p.num_tokens = m.num_tokens;
  p.block_size = m.block_size;
  p.width = m.block_table_width;
  p.block_table = m.block_table;
  p.seq_lens = m.seqused_k();
  p.cu_seqlens_q = m.qo_indptr();
  p.paged_kv_indptr = m.paged_kv_indptr;
  p.paged_kv_indices = m.paged_kv_indices;
  p.paged_kv_last_page_len = m.paged_kv_last_page_len;
  p.slot_mapping = m.slot_mapping;
  return p;
}

// One path's device KV cache and scratch.
struct Path {
  explicit Path(const BatchConfig& c)
      : k_cache(static_cast<size_t>(c.num_blocks) * c.block_size * kRow * sizeof(float)),
        v_cache(k_cache.bytes()),
        q(static_cast<size_t>(c.max_tokens_per_step) * kRow * sizeof(float)),
        new_k(q.bytes()),
        new_v(q.bytes()),
        out(q.bytes()) {}

  // Writes this step's K/V and returns attention outputs [num_tokens * kRow] in both forms.
  void run(const AttentionMetadata& m, cudaStream_t s, const std::vector<float>& hq,
           const std::vector<float>& hk, const std::vector<float>& hv, std::vector<float>& fa,
           std::vector<float>& fi) {
    const size_t bytes = hq.size() * sizeof(float);
    check_cuda(cudaMemcpyAsync(q.data(), hq.data(), bytes, cudaMemcpyHostToDevice, s), "copy q");
    check_cuda(cudaMemcpyAsync(new_k.data(), hk.data(), bytes, cudaMemcpyHostToDevice, s),
               "copy k");
    check_cuda(cudaMemcpyAsync(new_v.data(), hv.data(), bytes, cudaMemcpyHostToDevice, s),
               "copy v");
    const PagedKv p = paged(m);
    check_cuda(store_kv(p, new_k.data<float>(), new_v.data<float>(), k_cache.data<float>(),
                        v_cache.data<float>(), kHeads, kDim, s),
               "store_kv");
    for (bool flashinfer : {false, true}) {
      check_cuda(paged_attention(p, flashinfer, q.data<float>(), k_cache.data<float>(),
                                 v_cache.data<float>(), out.data<float>(), kHeads, kDim, s),
                 "paged_attention");
      std::vector<float>& dst = flashinfer ? fi : fa;
      dst.resize(hq.size());
      check_cuda(cudaMemcpyAsync(dst.data(), out.data(), bytes, cudaMemcpyDeviceToHost, s),
                 "copy out");
      check_cuda(cudaStreamSynchronize(s), "cudaStreamSynchronize");
    }
  }

  DeviceBuffer k_cache, v_cache, q, new_k, new_v, out;
};

class PagedAttention : public ::testing::TestWithParam<int32_t> {
 protected:
  void SetUp() override {
    if (!gpu_kernels_built()) GTEST_SKIP() << "built without CUDA kernels";
    if (!cuda_device_present()) GTEST_SKIP() << "no CUDA device present";
  }
};

}  // namespace

TEST_P(PagedAttention, MetadataGathersTheRightKeysAndValues) {
  const int32_t bs = GetParam();
  BatchConfig c;
  c.block_size = bs;
  c.max_seqs = 16;
  c.max_batch = 8;
  c.max_blocks_per_seq = 192 / bs;
  c.num_blocks = c.max_seqs * c.max_blocks_per_seq;  // never runs out
  c.max_tokens_per_step = 160;
  c.max_forks_per_step = 2;
  BlockTableManager cpu(c);
  CpuBatchPreparer upload(cpu);
  GpuBatchPreparer gpu(c);
  Path on_gpu(c), on_cpu(c);
  RandomSteps gen(c, 4242 + static_cast<uint64_t>(bs));
  std::mt19937 rng(99);
  std::uniform_real_distribution<float> uni(-1.f, 1.f);
  std::map<int32_t, std::vector<float>> hist_k, hist_v;  // per live sequence, [len][kRow]
  std::vector<float> hq, hk, hv, want, fa, fi;
  int64_t checked = 0;
  for (int step_no = 0; step_no < 150; ++step_no) {
    const Step& step = gen.make(cpu.lengths());
    upload.update(step);
    const AttentionMetadata cpu_meta = upload.pack(step);
    gpu.prepare(step);
    const AttentionMetadata gpu_meta = gpu.metadata();

    for (const Fork& f : step.forks) {  // the host model of every sequence's K/V
      const size_t n = static_cast<size_t>(f.prefix_len / bs * bs) * kRow;
      hist_k[f.child].assign(hist_k[f.parent].begin(), hist_k[f.parent].begin() + n);
      hist_v[f.child].assign(hist_v[f.parent].begin(), hist_v[f.parent].begin() + n);
    }
    hq.clear();
    hk.clear();
    hv.clear();
    for (const SeqStep& e : step.batch) {
      for (int t = 0; t < e.new_tokens * kRow; ++t) {
        hq.push_back(uni(rng));
        hk.push_back(uni(rng));
        hv.push_back(uni(rng));
      }
      auto& k = hist_k[e.seq];
      auto& v = hist_v[e.seq];
      ASSERT_EQ(k.size(), static_cast<size_t>(e.prior_len) * kRow);
      k.insert(k.end(), hk.end() - e.new_tokens * kRow, hk.end());
      v.insert(v.end(), hv.end() - e.new_tokens * kRow, hv.end());
    }
    want.assign(hq.size(), 0.f);
    size_t t = 0;
    for (const SeqStep& e : step.batch)
      for (int j = 0; j < e.new_tokens; ++j, ++t)
        dense_attention(hq.data() + t * kRow, hist_k[e.seq], hist_v[e.seq], e.prior_len + j,
                        want.data() + t * kRow);
    for (int32_t seq : step.finished) {
      hist_k.erase(seq);
      hist_v.erase(seq);
    }

    for (int path = 0; path < 2; ++path) {
      if (path == 0) {
        on_gpu.run(gpu_meta, gpu.stream(), hq, hk, hv, fa, fi);
      } else {
        on_cpu.run(cpu_meta, upload.stream(), hq, hk, hv, fa, fi);
      }
      for (size_t x = 0; x < want.size(); ++x) {
        ASSERT_NEAR(fa[x], want[x], 2e-4)
            << (path ? "cpu" : "gpu") << " path, block_table form, step " << step_no;
        ASSERT_NEAR(fi[x], want[x], 2e-4)
            << (path ? "cpu" : "gpu") << " path, FlashInfer form, step " << step_no;
      }
    }
    gpu.synchronize();
    checked += static_cast<int64_t>(want.size());
  }
  EXPECT_GT(checked, 1000);
}

INSTANTIATE_TEST_SUITE_P(BlockSizes, PagedAttention, ::testing::Values(1, 16, 64));
