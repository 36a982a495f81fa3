#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "support/gpu_capture.hpp"

namespace kvpager::testing {

namespace {
void check(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess) {
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorName(rc));
  }
}

__global__ void touch_kernel(unsigned* p) {
  p[threadIdx.x] += 1;
}
}  // namespace

GpuStream::GpuStream() {
  cudaStream_t s = nullptr;
  check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  stream_ = s;
}

GpuStream::~GpuStream() {
  cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
}

GlobalCapture::GlobalCapture() {
  check(cudaMalloc(&scratch_, 32 * sizeof(unsigned)), "cudaMalloc");
  check(cudaMemset(scratch_, 0, 32 * sizeof(unsigned)), "cudaMemset");
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  const auto s = reinterpret_cast<cudaStream_t>(stream_.handle());
  check(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), "cudaStreamBeginCapture");
  open_ = true;
}

std::string GlobalCapture::end() {
  const auto s = reinterpret_cast<cudaStream_t>(stream_.handle());
  touch_kernel<<<1, 32, 0, s>>>(static_cast<unsigned*>(scratch_));
  const cudaError_t launched = cudaGetLastError();
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(s, &graph);
  open_ = false;
  graph_ = graph;
  if (launched != cudaSuccess) return std::string("launch: ") + cudaGetErrorName(launched);
  if (ended != cudaSuccess) return std::string("cudaStreamEndCapture: ") + cudaGetErrorName(ended);
  cudaGraphExec_t exec = nullptr;
  const cudaError_t made = cudaGraphInstantiate(&exec, graph, 0);
  if (made != cudaSuccess) return std::string("cudaGraphInstantiate: ") + cudaGetErrorName(made);
  cudaGraphExecDestroy(exec);
  return "";
}

GlobalCapture::~GlobalCapture() {
  if (open_) {
    cudaGraph_t graph = nullptr;
    cudaStreamEndCapture(reinterpret_cast<cudaStream_t>(stream_.handle()), &graph);
    if (graph != nullptr) cudaGraphDestroy(graph);
  }
  if (graph_ != nullptr) cudaGraphDestroy(static_cast<cudaGraph_t>(graph_));
  cudaFree(scratch_);
  cudaGetLastError();  // clears the last error an invalidated capture leaves behind
}

}  // namespace kvpager::testing
