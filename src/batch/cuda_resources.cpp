#include "kvpager/batch/cuda_resources.hpp"

#include <cuda_runtime_api.h>

#include "kvpager/common/error.hpp"

namespace kvpager::batch {

void check_cuda(cudaError_t result, const char* call) {
  if (result == cudaSuccess) return;
  const char* name = cudaGetErrorName(result);
  const char* text = cudaGetErrorString(result);
  if (result == cudaErrorMemoryAllocation)
    throw OutOfMemory(std::string(call) + " failed: " + (name ? name : "?") + " (" +
                      (text ? text : "") + ")");
  throw DriverError(call, name ? name : "cudaError?", text ? text : "");
}

bool cuda_device_present() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no device / no driver" error
    return false;
  }
  return count > 0;
}

CudaStream::CudaStream() {
  check_cuda(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
}
CudaStream::~CudaStream() {
  if (s_) (void)cudaStreamDestroy(s_);
}
void CudaStream::synchronize() const {
  check_cuda(cudaStreamSynchronize(s_), "cudaStreamSynchronize");
}

CudaEvent::CudaEvent(bool timing) {
  check_cuda(cudaEventCreateWithFlags(&e_, timing ? cudaEventDefault : cudaEventDisableTiming),
             "cudaEventCreateWithFlags");
}
CudaEvent::~CudaEvent() {
  if (e_) (void)cudaEventDestroy(e_);
}
void CudaEvent::record(cudaStream_t stream) {
  check_cuda(cudaEventRecord(e_, stream), "cudaEventRecord");
}
void CudaEvent::synchronize() const {
  check_cuda(cudaEventSynchronize(e_), "cudaEventSynchronize");
}
float CudaEvent::elapsed_ms(const CudaEvent& start, const CudaEvent& end) {
  float ms = 0;
  check_cuda(cudaEventElapsedTime(&ms, start.e_, end.e_), "cudaEventElapsedTime");
  return ms;
}

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  check_cuda(cudaMalloc(&p_, bytes ? bytes : 1), "cudaMalloc");
}
DeviceBuffer::~DeviceBuffer() {
  if (p_) (void)cudaFree(p_);
}

PinnedBuffer::PinnedBuffer(size_t bytes) : bytes_(bytes) {
  check_cuda(cudaHostAlloc(&p_, bytes ? bytes : 1, cudaHostAllocPortable), "cudaHostAlloc");
}
PinnedBuffer::~PinnedBuffer() {
  if (p_) (void)cudaFreeHost(p_);
}

CudaGraphExec::~CudaGraphExec() {
  if (g_) (void)cudaGraphExecDestroy(g_);
}
void CudaGraphExec::launch(cudaStream_t stream) const {
  check_cuda(cudaGraphLaunch(g_, stream), "cudaGraphLaunch");
}
void CudaGraphExec::begin_capture(cudaStream_t stream) {
  check_cuda(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal),
             "cudaStreamBeginCapture");
}
void CudaGraphExec::abandon_capture(cudaStream_t stream) noexcept {
  cudaGraph_t graph = nullptr;
  if (cudaStreamEndCapture(stream, &graph) == cudaSuccess && graph) (void)cudaGraphDestroy(graph);
  (void)cudaGetLastError();
}
CudaGraphExec CudaGraphExec::end_capture(cudaStream_t stream) {
  cudaGraph_t graph = nullptr;
  check_cuda(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture");
  CudaGraphExec exec;
  const cudaError_t rc = cudaGraphInstantiate(&exec.g_, graph, 0);
  (void)cudaGraphDestroy(graph);
  check_cuda(rc, "cudaGraphInstantiate");
  return exec;
}

}  // namespace kvpager::batch
