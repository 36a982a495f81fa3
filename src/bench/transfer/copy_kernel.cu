// The gather/scatter copy kernel of the CUDA transfer engine (--copy_engine kernel). Compiled
// to a fatbin and embedded in kvpager (src/bench/transfer/CMakeLists.txt); loaded through the
// driver shim (copy_kernel.cpp), so kvpager_transfer needs no CUDA runtime.
//
// kvpager_copy_pieces(pieces, count): CTA b copies pieces b, b + gridDim.x, ... Each piece is
// copied by the whole CTA: a head of bytes up to the first aligned destination address, a body
// of the widest words both addresses allow (16 bytes when source and destination agree modulo
// 16, else 8, 4, 2 or 1), four loads in flight per thread before their stores, then the tail.
// Addresses may be device memory, peer memory or pinned host memory (unified addressing).
#include <cstdint>

namespace {

struct CopyPiece {  // kvpager::transfer::CopyPiece (copy_plan.hpp)
  unsigned long long src;
  unsigned long long dst;
  unsigned long long bytes;
};

constexpr int kUnroll = 4;

template <typename T>
__device__ __forceinline__ T load(const T* p) {
  return *p;
}
template <>
__device__ __forceinline__ uint4 load(const uint4* p) {
  return __ldcs(p);  // streaming: each byte is read once
}
template <typename T>
__device__ __forceinline__ void store(T* p, T v) {
  *p = v;
}
template <>
__device__ __forceinline__ void store(uint4* p, uint4 v) {
  __stcs(p, v);
}

// Copies `words` T-sized words; both pointers are T-aligned.
template <typename T>
__device__ __forceinline__ void copy_words(const T* __restrict__ src, T* __restrict__ dst,
                                           unsigned long long words) {
  const unsigned long long stride = blockDim.x;
  unsigned long long i = threadIdx.x;
  for (; i + (kUnroll - 1) * stride < words; i += kUnroll * stride) {
    T v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) v[u] = load(src + i + u * stride);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) store(dst + i + u * stride, v[u]);
  }
  for (; i < words; i += stride) store(dst + i, load(src + i));
}

__device__ void copy_piece(const unsigned char* src, unsigned char* dst, unsigned long long n) {
  const unsigned long long skew =
      (reinterpret_cast<unsigned long long>(src) ^ reinterpret_cast<unsigned long long>(dst)) & 15;
  const unsigned align = skew == 0         ? 16
                         : (skew & 7) == 0 ? 8
                         : (skew & 3) == 0 ? 4
                         : (skew & 1) == 0 ? 2
                                           : 1;
  unsigned long long head =
      (align - (reinterpret_cast<unsigned long long>(dst) & (align - 1))) & (align - 1);
  if (head > n) head = n;
  if (threadIdx.x < head) dst[threadIdx.x] = src[threadIdx.x];  // head < 16 <= blockDim.x
  src += head;
  dst += head;
  n -= head;
  const unsigned long long body = n / align * align;
  switch (align) {
    case 16:
      copy_words(reinterpret_cast<const uint4*>(src), reinterpret_cast<uint4*>(dst), body / 16);
      break;
    case 8:
      copy_words(reinterpret_cast<const uint2*>(src), reinterpret_cast<uint2*>(dst), body / 8);
      break;
    case 4:
      copy_words(reinterpret_cast<const unsigned*>(src), reinterpret_cast<unsigned*>(dst),
                 body / 4);
      break;
    case 2:
      copy_words(reinterpret_cast<const unsigned short*>(src),
                 reinterpret_cast<unsigned short*>(dst), body / 2);
      break;
    default:
      copy_words(src, dst, body);
      break;
  }
  for (unsigned long long i = body + threadIdx.x; i < n; i += blockDim.x) dst[i] = src[i];
}

}  // namespace

// Launched with kCopyThreads (256) threads per CTA (copy_plan.hpp).
extern "C" __global__ void __launch_bounds__(256, 8)
    kvpager_copy_pieces(const CopyPiece* __restrict__ pieces, unsigned long long count) {
  for (unsigned long long p = blockIdx.x; p < count; p += gridDim.x) {
    const CopyPiece c = pieces[p];
    copy_piece(reinterpret_cast<const unsigned char*>(c.src),
               reinterpret_cast<unsigned char*>(c.dst), c.bytes);
  }
}
