// cudaMemcpy's peak bandwidth on this GPU, the reference kvpager's CUDA engine is compared to
// (scripts/gpu/kvbench.sh). One large copy per direction, repeated; pinned host memory, as the
// engine's DRAM segments (cuMemAllocHost). Same directions as the bench: H2D is what a DRAM
// initiator's WRITE to VRAM does, D2H a VRAM initiator's WRITE to DRAM, D2D VRAM to VRAM.
// With two or more GPUs also P2P: device 0 to device 1 with peer access enabled
// (cudaMemcpyPeer's path, as the engine's VRAM initiator writing to a VRAM target on device 1).
// Prints one JSON object per direction: {"direction": "H2D", "bytes": N, "gb_per_s": x}.
// Usage: kvpager_cuda_memcpy_peak [bytes (default 256 MiB)] [iterations (default 20)]
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

namespace {

bool ok(cudaError_t rc, const char* call) {
  if (rc == cudaSuccess) return true;
  std::fprintf(stderr, "kvpager_cuda_memcpy_peak: %s failed: %s\n", call, cudaGetErrorString(rc));
  return false;
}

double gb_per_s(void* dst, const void* src, size_t bytes, int iterations, cudaMemcpyKind kind) {
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  cudaMemcpy(dst, src, bytes, kind);  // warm-up
  cudaEventRecord(start);
  for (int i = 0; i < iterations; ++i) cudaMemcpy(dst, src, bytes, kind);
  cudaEventRecord(stop);
  cudaEventSynchronize(stop);
  float ms = 0;
  cudaEventElapsedTime(&ms, start, stop);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return static_cast<double>(bytes) * iterations / (ms / 1e3) / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  const size_t bytes = argc > 1 ? std::strtoull(argv[1], nullptr, 0) : (256ull << 20);
  const int iterations = argc > 2 ? std::atoi(argv[2]) : 20;
  void *host = nullptr, *dev_a = nullptr, *dev_b = nullptr;
  if (!ok(cudaMallocHost(&host, bytes), "cudaMallocHost") ||
      !ok(cudaMalloc(&dev_a, bytes), "cudaMalloc") ||
      !ok(cudaMalloc(&dev_b, bytes), "cudaMalloc")) {
    return 1;
  }
  cudaMemset(dev_a, 1, bytes);
  std::printf("{\"direction\": \"H2D\", \"bytes\": %zu, \"gb_per_s\": %.3f}\n", bytes,
              gb_per_s(dev_a, host, bytes, iterations, cudaMemcpyHostToDevice));
  std::printf("{\"direction\": \"D2H\", \"bytes\": %zu, \"gb_per_s\": %.3f}\n", bytes,
              gb_per_s(host, dev_a, bytes, iterations, cudaMemcpyDeviceToHost));
  std::printf("{\"direction\": \"D2D\", \"bytes\": %zu, \"gb_per_s\": %.3f}\n", bytes,
              gb_per_s(dev_b, dev_a, bytes, iterations, cudaMemcpyDeviceToDevice));
  int devices = 0;
  cudaGetDeviceCount(&devices);
  if (devices >= 2) {
    void* peer = nullptr;
    cudaSetDevice(1);
    if (!ok(cudaMalloc(&peer, bytes), "cudaMalloc (device 1)")) return 1;
    cudaSetDevice(0);
    const cudaError_t rc = cudaDeviceEnablePeerAccess(1, 0);
    if (rc != cudaSuccess && rc != cudaErrorPeerAccessAlreadyEnabled)
      ok(rc, "cudaDeviceEnablePeerAccess");
    cudaGetLastError();
    std::printf("{\"direction\": \"P2P\", \"bytes\": %zu, \"gb_per_s\": %.3f}\n", bytes,
                gb_per_s(peer, dev_a, bytes, iterations, cudaMemcpyDefault));
    cudaFree(peer);
  }
  cudaFree(dev_b);
  cudaFree(dev_a);
  cudaFreeHost(host);
  return ok(cudaGetLastError(), "cuda") ? 0 : 1;
}
