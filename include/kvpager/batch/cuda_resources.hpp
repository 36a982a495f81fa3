#pragma once
// RAII owners of the CUDA runtime resources the batch layer uses: a stream, an event, device
// memory, pinned host memory and an instantiated graph. Each releases its resource in the
// destructor (errors there are ignored, never thrown) and is movable, not copyable.
// check_cuda turns a failed runtime call into DriverError(call, cudaGetErrorName) or, for
// cudaErrorMemoryAllocation, OutOfMemory.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <utility>

namespace kvpager::batch {

void check_cuda(cudaError_t result, const char* call);

// True when the CUDA runtime sees at least one device (false without a driver).
bool cuda_device_present();

class CudaStream {
 public:
  CudaStream();  // non-blocking stream on the current device
  ~CudaStream();
  CudaStream(CudaStream&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  CudaStream& operator=(CudaStream&&) = delete;
  cudaStream_t get() const { return s_; }
  void synchronize() const;

 private:
  cudaStream_t s_ = nullptr;
};

class CudaEvent {
 public:
  explicit CudaEvent(bool timing = false);
  ~CudaEvent();
  CudaEvent(CudaEvent&& o) noexcept : e_(std::exchange(o.e_, nullptr)) {}
  CudaEvent& operator=(CudaEvent&&) = delete;
  cudaEvent_t get() const { return e_; }
  void record(cudaStream_t stream);
  void synchronize() const;
  // Milliseconds between two recorded, completed timing events.
  static float elapsed_ms(const CudaEvent& start, const CudaEvent& end);

 private:
  cudaEvent_t e_ = nullptr;
};

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);  // cudaMalloc; OutOfMemory when it fails for memory
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : p_(std::exchange(o.p_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  template <class T = void>
  T* data() const {
    return static_cast<T*>(p_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(size_t bytes);  // cudaHostAlloc (page-locked, portable)
  ~PinnedBuffer();
  PinnedBuffer(PinnedBuffer&& o) noexcept
      : p_(std::exchange(o.p_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  template <class T = void>
  T* data() const {
    return static_cast<T*>(p_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

// An instantiated CUDA graph captured from a stream.
class CudaGraphExec {
 public:
  CudaGraphExec() = default;
  ~CudaGraphExec();
  CudaGraphExec(CudaGraphExec&& o) noexcept : g_(std::exchange(o.g_, nullptr)) {}
  CudaGraphExec& operator=(CudaGraphExec&& o) noexcept {
    std::swap(g_, o.g_);
    return *this;
  }
  // Runs `body(stream)` under thread-local capture of `stream` and instantiates the result.
  template <class Body>
  static CudaGraphExec capture(cudaStream_t stream, Body&& body) {
    begin_capture(stream);
    try {
      body(stream);
    } catch (...) {
      abandon_capture(stream);
      throw;
    }
    return end_capture(stream);
  }
  void launch(cudaStream_t stream) const;
  explicit operator bool() const { return g_ != nullptr; }

 private:
  static void begin_capture(cudaStream_t stream);
  static void abandon_capture(cudaStream_t stream) noexcept;
  static CudaGraphExec end_capture(cudaStream_t stream);
  cudaGraphExec_t g_ = nullptr;
};

}  // namespace kvpager::batch
