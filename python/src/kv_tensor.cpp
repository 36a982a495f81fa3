#include "kv_tensor.hpp"

#include "kvpager/common/error.hpp"

namespace kvpager::python {

namespace {
constexpr size_t kMaxDims = 16;
}

KvTensor KvTensor::make(const KvRegion& region, uint64_t byte_offset, std::vector<int64_t> shape,
                        std::vector<int64_t> strides, const DType& dtype) {
  if (shape.empty() || shape.size() > kMaxDims) {
    throw InvalidArgument("KV tensor view: needs 1 to " + std::to_string(kMaxDims) +
                          " dimensions, got " + std::to_string(shape.size()));
  }
  if (strides.size() != shape.size()) {
    throw InvalidArgument("KV tensor view: " + std::to_string(shape.size()) + " dimensions but " +
                          std::to_string(strides.size()) + " strides");
  }
  if (byte_offset % dtype.bytes != 0) {
    throw InvalidArgument("KV tensor view: byte offset " + std::to_string(byte_offset) +
                          " is not a multiple of the " + dtype.name + " element size");
  }
  uint64_t last = 0;  // element offset of the last element
  bool empty = false;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0) {
      throw InvalidArgument("KV tensor view: dimension " + std::to_string(i) + " is negative (" +
                            std::to_string(shape[i]) + ")");
    }
    if (strides[i] < 0) {
      throw InvalidArgument("KV tensor view: stride " + std::to_string(i) + " is negative (" +
                            std::to_string(strides[i]) + ")");
    }
    if (shape[i] == 0) empty = true;
    if (shape[i] > 0) {
      const uint64_t step = static_cast<uint64_t>(shape[i] - 1) * static_cast<uint64_t>(strides[i]);
      if (strides[i] != 0 && step / static_cast<uint64_t>(strides[i]) != uint64_t(shape[i] - 1)) {
        throw InvalidArgument("KV tensor view: extent overflows");
      }
      last += step;
    }
  }
  const uint64_t end = byte_offset + (empty ? 0 : (last + 1) * dtype.bytes);
  if (byte_offset > region.bytes || end > region.bytes || end < byte_offset) {
    throw InvalidArgument("KV tensor view: reaches byte " + std::to_string(end) +
                          " of a KV space of " + std::to_string(region.bytes) + " bytes");
  }
  KvTensor t;
  t.owner_ = region.owner;
  t.device_ = region.device;
  t.data_ = region.base + byte_offset;
  t.shape_ = std::move(shape);
  t.strides_ = std::move(strides);
  t.dtype_ = &dtype;
  return t;
}

KvTensor natural_tensor(const KvRegion& region, const kv::TensorView& v, const DType& dtype) {
  const int64_t token = int64_t{v.kv_heads} * v.head_dim;
  return KvTensor::make(
      region, v.base - region.base,
      {static_cast<int64_t>(v.num_blocks), v.block_size, v.kv_heads, v.head_dim},
      {static_cast<int64_t>(v.block_stride_bytes / v.dtype_bytes), token, v.head_dim, 1}, dtype);
}

KvTensor KvTensor::retyped(const DType& dtype) const {
  KvTensor t = *this;
  t.dtype_ = &dtype;
  return t;
}

std::string KvTensor::device_name() const {
  if (device_.device_type == kDLCUDA) return "cuda:" + std::to_string(device_.device_id);
  return "cpu";
}

}  // namespace kvpager::python
