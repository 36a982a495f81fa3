#pragma once
// A CUDA graph capture held open, as an engine's warm-up holds one (built only with nvcc).
// GlobalCapture begins capturing a stream of its own in CUDA's global mode (torch.cuda.graph's
// default, so vLLM's): while it is open CUDA refuses "potentially unsafe" driver calls made on
// other threads still in the default capture mode, and such a call invalidates the capture.
// Ownership: owns its stream, scratch buffer and graph; the destructor ends a capture still
// open. Thread safety: begin and end on the thread that built it. Errors: std::runtime_error.
#include <cstdint>
#include <string>

namespace kvpager::testing {

// A non-blocking stream (RAII), e.g. the one a cache waits on before unmapping.
class GpuStream {
 public:
  GpuStream();
  ~GpuStream();
  GpuStream(const GpuStream&) = delete;
  GpuStream& operator=(const GpuStream&) = delete;
  uintptr_t handle() const { return reinterpret_cast<uintptr_t>(stream_); }

 private:
  void* stream_ = nullptr;
};

class GlobalCapture {
 public:
  GlobalCapture();  // begins the capture
  ~GlobalCapture();
  GlobalCapture(const GlobalCapture&) = delete;
  GlobalCapture& operator=(const GlobalCapture&) = delete;

  // Captures one kernel, ends the capture and instantiates the graph. Returns "" when the
  // capture stayed valid throughout, else the CUDA error that ended it.
  std::string end();

 private:
  GpuStream stream_;
  void* scratch_ = nullptr;
  void* graph_ = nullptr;
  bool open_ = false;
};

}  // namespace kvpager::testing
