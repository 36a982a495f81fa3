#include "kvpager/batch/attention_metadata.hpp"

#include <string>
#include <tuple>

#include "kvpager/common/error.hpp"

namespace kvpager::batch {

MetadataLayout MetadataLayout::make(int32_t batch, int32_t tokens, int32_t kv_indices,
                                    int32_t width) {
  MetadataLayout l;
  l.batch = batch;
  l.tokens = tokens;
  l.kv_indices = kv_indices;
  l.width = width;
  const auto b = static_cast<size_t>(batch);
  size_t at = 0;
  auto take = [&](size_t ints) {
    const size_t start = at;
    at += ints;
    return start;
  };
  l.header = take(kHeaderInts);
  l.seq_lens = take(b);
  l.cu_seqlens_q = take(b + 1);
  l.cu_seqlens_k = take(b + 1);
  l.paged_kv_indptr = take(b + 1);
  l.paged_kv_last_page_len = take(b);
  l.slot_mapping = take(static_cast<size_t>(tokens));
  l.block_table = take(b * static_cast<size_t>(width));
  l.paged_kv_indices = take(static_cast<size_t>(kv_indices));
  l.total_ints = at;
  return l;
}

AttentionMetadata AttentionMetadata::over(const int32_t* base, const MetadataLayout& l,
                                          bool on_device) {
  AttentionMetadata m;
  m.on_device = on_device;
  m.header = base + l.header;
  m.seq_lens = base + l.seq_lens;
  m.cu_seqlens_q = base + l.cu_seqlens_q;
  m.cu_seqlens_k = base + l.cu_seqlens_k;
  m.paged_kv_indptr = base + l.paged_kv_indptr;
  m.paged_kv_last_page_len = base + l.paged_kv_last_page_len;
  m.slot_mapping = base + l.slot_mapping;
  m.block_table = base + l.block_table;
  m.paged_kv_indices = base + l.paged_kv_indices;
  m.block_table_width = l.width;
  return m;
}

MetadataSnapshot snapshot(const AttentionMetadata& m) {
  if (m.on_device) throw InvalidArgument("snapshot() needs a host view");
  MetadataSnapshot s;
  auto copy = [](const int32_t* p, int32_t n) {
    return std::vector<int32_t>(p, p + (n > 0 ? n : 0));
  };
  const int32_t b = m.batch;
  s.header = copy(m.header, static_cast<int32_t>(MetadataLayout::kHeaderInts));
  s.seq_lens = copy(m.seq_lens, b);
  s.cu_seqlens_q = copy(m.cu_seqlens_q, b + 1);
  s.cu_seqlens_k = copy(m.cu_seqlens_k, b + 1);
  s.paged_kv_indptr = copy(m.paged_kv_indptr, b + 1);
  s.paged_kv_last_page_len = copy(m.paged_kv_last_page_len, b);
  s.slot_mapping = copy(m.slot_mapping, m.num_tokens);
  s.block_table = copy(m.block_table, b * m.block_table_width);
  s.paged_kv_indices = copy(m.paged_kv_indices, m.num_kv_indices);
  return s;
}

std::string MetadataSnapshot::first_difference(const MetadataSnapshot& o) const {
  auto diff = [](const char* name, const std::vector<int32_t>& a,
                 const std::vector<int32_t>& b) -> std::string {
    if (a.size() != b.size())
      return std::string(name) + ": size " + std::to_string(a.size()) + " vs " +
             std::to_string(b.size());
    for (size_t i = 0; i < a.size(); ++i)
      if (a[i] != b[i])
        return std::string(name) + "[" + std::to_string(i) + "]: " + std::to_string(a[i]) + " vs " +
               std::to_string(b[i]);
    return {};
  };
  for (auto [name, a, b] :
       {std::tuple{"header", &header, &o.header},
        {"seq_lens", &seq_lens, &o.seq_lens},
        {"cu_seqlens_q", &cu_seqlens_q, &o.cu_seqlens_q},
        {"cu_seqlens_k", &cu_seqlens_k, &o.cu_seqlens_k},
        {"paged_kv_indptr", &paged_kv_indptr, &o.paged_kv_indptr},
        {"paged_kv_last_page_len", &paged_kv_last_page_len, &o.paged_kv_last_page_len},
        {"slot_mapping", &slot_mapping, &o.slot_mapping},
        {"block_table", &block_table, &o.block_table},
        {"paged_kv_indices", &paged_kv_indices, &o.paged_kv_indices}}) {
    std::string d = diff(name, *a, *b);
    if (!d.empty()) return d;
  }
  return {};
}

}  // namespace kvpager::batch
