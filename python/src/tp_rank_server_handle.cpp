#include "tp_rank_server_handle.hpp"

#include "kvpager/common/error.hpp"
#include "kvpager/kv/kv_cache.hpp"

namespace kvpager::python {

TpRankServerHandle::TpRankServerHandle(const TpRankServerOptions& o)
    : dtype_(&parse_dtype(o.dtype)) {
  tp::RankServerConfig c;
  const kv::KvGeometry g = o.geometry(*dtype_);
  c.worker.geometry = g;
  c.worker.layout = o.layout_or(kv::KvLayout::kInterleaved);
  if (o.num_blocks == 0) {
    throw InvalidArgument("TpRankServer: num_blocks must be given (the scheduler's block count)");
  }
  c.worker.num_blocks = o.num_blocks;
  // What a KvCache of this geometry would pick; the executor rounds it up to its device's
  // granularity (granularity 1 here leaves that rounding to it).
  kv::KvCacheConfig as_cache;
  as_cache.geometry = g;
  as_cache.layout = c.worker.layout;
  as_cache.handle_bytes = o.handle_bytes.value_or(0);
  c.worker.handle_bytes = o.handle_bytes ? *o.handle_bytes : kv::choose_handle_bytes(as_cache, 1);
  c.worker.ready_pages = 0;  // no uncharged ready handles: the scheduler charges mapped pages
  c.worker.backend = o.backend_config();
  c.token = o.token;
  c.rank = RankId(o.rank);
  server_ = std::make_shared<tp::RankServer>(c);
  if (o.stream) server_->set_unmap_stream(*o.stream);
  const vmm::DeviceIdentity id = vmm::identify_device(c.worker.backend);
  device_ = id.cuda ? DLDevice{kDLCUDA, id.device} : DLDevice{kDLCPU, 0};
}

void TpRankServerHandle::abandon_after_fork(long parent_pid) {
  if (forked_from_ != 0 || !server_) return;
  forked_from_ = parent_pid;
  new std::shared_ptr<tp::RankServer>(server_);  // NOLINT: deliberately leaked
}

tp::RankServer& TpRankServerHandle::server() const {
  if (forked_from_ != 0) {
    throw StateError("this TpRankServer belongs to process " + std::to_string(forked_from_) +
                     ", which forked this one: build a new one here");
  }
  if (!server_) throw StateError("this TpRankServer was closed");
  return *server_;
}

KvRegion TpRankServerHandle::region() const {
  const kv::KvSpace& s = server().space();
  return KvRegion{server_, device_, s.tensor(0, 0).base, s.reserved_bytes()};
}

KvTensor TpRankServerHandle::tensor(uint32_t layer, uint32_t component) const {
  return natural_tensor(region(), server().space().tensor(layer, component), *dtype_);
}

KvTensor TpRankServerHandle::view(uint64_t byte_offset, std::vector<int64_t> shape,
                                  std::vector<int64_t> strides, const DType& dtype) const {
  return KvTensor::make(region(), byte_offset, std::move(shape), std::move(strides), dtype);
}

uint64_t TpRankServerHandle::tensor_offset(uint32_t layer, uint32_t component) const {
  const kv::KvSpace& s = server().space();
  return s.tensor(layer, component).base - s.tensor(0, 0).base;
}

uint64_t TpRankServerHandle::block_stride_bytes() const {
  return server().space().tensor(0, 0).block_stride_bytes;
}

std::vector<PageId> TpRankServerHandle::pages_of_blocks(uint64_t first, uint64_t count) const {
  const kv::KvSpace& s = server().space();
  std::vector<PageId> out;
  if (count == 0) return out;
  const uint64_t stride = block_stride_bytes();
  // Block b is bytes [b * stride, (b + 1) * stride) of each tensor (of the one region when
  // interleaved) and page p bytes [p * H, (p + 1) * H) of each: the same pages in every tensor.
  const uint64_t begin = first * stride / s.handle_bytes();
  const uint64_t end =
      std::min<uint64_t>(((first + count) * stride - 1) / s.handle_bytes() + 1, s.num_pages());
  for (uint64_t p = begin; p < end; ++p) out.emplace_back(static_cast<uint32_t>(p));
  return out;
}

}  // namespace kvpager::python
