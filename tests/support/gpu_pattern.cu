#include <cuda_runtime.h>

#include "support/gpu_pattern.hpp"

namespace kvpager::testing {

namespace {
__device__ uint32_t device_pattern_word(uint32_t seed, uint64_t i) {
  uint64_t x = (static_cast<uint64_t>(seed) << 32) ^ (i * 0x9E3779B97F4A7C15ull);
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  return static_cast<uint32_t>(x) | 1u;
}

__global__ void fill_kernel(uint32_t* p, uint64_t words, uint32_t seed) {
  for (uint64_t i = blockIdx.x * blockDim.x + threadIdx.x; i < words;
       i += static_cast<uint64_t>(gridDim.x) * blockDim.x) {
    p[i] = device_pattern_word(seed, i);
  }
}

__global__ void mismatch_kernel(const uint32_t* p, uint64_t words, uint32_t seed, bool zero,
                                unsigned long long* out) {
  unsigned long long local = 0;
  for (uint64_t i = blockIdx.x * blockDim.x + threadIdx.x; i < words;
       i += static_cast<uint64_t>(gridDim.x) * blockDim.x) {
    local += zero ? (p[i] != 0) : (p[i] != device_pattern_word(seed, i));
  }
  if (local) atomicAdd(out, local);
}

long long count(uintptr_t ptr, size_t bytes, uint32_t seed, bool zero) {
  unsigned long long* d = nullptr;
  if (cudaMalloc(&d, sizeof *d) != cudaSuccess) return -1;
  cudaMemset(d, 0, sizeof *d);
  mismatch_kernel<<<264, 256>>>(reinterpret_cast<const uint32_t*>(ptr), bytes / 4, seed, zero, d);
  unsigned long long h = 0;
  const bool ok = cudaGetLastError() == cudaSuccess && cudaDeviceSynchronize() == cudaSuccess &&
                  cudaMemcpy(&h, d, sizeof h, cudaMemcpyDeviceToHost) == cudaSuccess;
  cudaFree(d);
  return ok ? static_cast<long long>(h) : -1;
}
}  // namespace

bool gpu_fill_pattern(uintptr_t ptr, size_t bytes, uint32_t seed, const char** error) {
  fill_kernel<<<264, 256>>>(reinterpret_cast<uint32_t*>(ptr), bytes / 4, seed);
  cudaError_t rc = cudaGetLastError();
  if (rc == cudaSuccess) rc = cudaDeviceSynchronize();
  if (rc != cudaSuccess && error) *error = cudaGetErrorString(rc);
  return rc == cudaSuccess;
}

long long gpu_count_mismatches(uintptr_t ptr, size_t bytes, uint32_t seed) {
  return count(ptr, bytes, seed, false);
}

long long gpu_count_nonzero(uintptr_t ptr, size_t bytes) {
  return count(ptr, bytes, 0, true);
}

}  // namespace kvpager::testing
