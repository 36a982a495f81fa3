#include "kvpager/bench/transfer/cuda_engine.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <sstream>
#include <thread>
#include <vector>

#include "copy_kernel.hpp"
#include "kvpager/bench/transfer/copy_plan.hpp"
#include "kvpager/bench/transfer/host_buffer.hpp"
#include "kvpager/common/error.hpp"
#include "kvpager/common/units.hpp"
#include "kvpager/vmm/cuda_driver.hpp"

namespace kvpager::transfer {

namespace {

using vmm::CudaDriver;
constexpr uint64_t kStaging = 64ull << 20;

const CudaDriver& driver() {
  if (!CudaDriver::device_present()) {
    std::string why = "no CUDA device";
    try {
      CudaDriver::get();
    } catch (const DriverError& e) {
      why = e.result();
    }
    throw DriverError("load CUDA driver", why,
                      "--backend CUDA needs a GPU; use --backend UCX or POSIX on this machine");
  }
  return CudaDriver::get();
}

std::vector<int> devices_of(const XferConfig& c) {
  const CudaDriver& d = driver();
  int count = 0;
  d.check(d.cuDeviceGetCount(&count), "cuDeviceGetCount");
  std::vector<int> out;
  if (c.device_list == "all") {
    for (int i = 0; i < count; ++i) out.push_back(i);
    return out;
  }
  std::stringstream s(c.device_list);
  for (std::string item; std::getline(s, item, ',');) {
    int id = -1;
    try {
      size_t used = 0;
      id = std::stoi(item, &used);
      if (used != item.size()) id = -1;
    } catch (const std::exception&) {
    }
    if (id < 0 || id >= count) {
      throw InvalidArgument("--device_list " + c.device_list + ": '" + item +
                            "' is not a CUDA device index (0.." + std::to_string(count - 1) + ")");
    }
    out.push_back(id);
  }
  if (out.empty()) throw InvalidArgument("--device_list is empty");
  return out;
}

// The device's primary context, retained for the object's life.
class PrimaryContext {
 public:
  explicit PrimaryContext(int ordinal) : d_(driver()) {
    d_.check(d_.cuDeviceGet(&device_, ordinal), "cuDeviceGet");
    d_.check(d_.cuDevicePrimaryCtxRetain(&ctx_, device_), "cuDevicePrimaryCtxRetain");
  }
  ~PrimaryContext() { d_.cuDevicePrimaryCtxRelease(device_); }
  PrimaryContext(const PrimaryContext&) = delete;
  PrimaryContext& operator=(const PrimaryContext&) = delete;
  void make_current() const { d_.check(d_.cuCtxSetCurrent(ctx_), "cuCtxSetCurrent"); }
  CUdevice device() const { return device_; }
  int ordinal() const { return static_cast<int>(device_); }

 private:
  const CudaDriver& d_;
  CUdevice device_ = 0;
  CUcontext ctx_ = nullptr;
};

// Memory addressable as a CUdeviceptr (unified addressing): pinned host or device.
class CudaSegment : public Segment {
 public:
  CudaSegment(const PrimaryContext& ctx, uint64_t bytes, bool host)
      : d_(driver()), ctx_(ctx), size_(bytes), host_(host) {}
  uint64_t size() const override { return size_; }
  CUdeviceptr ptr() const { return ptr_; }

  void fill(uint64_t offset, uint64_t bytes, uint64_t pattern_offset, uint64_t seed) override {
    if (host_) {
      fill_pattern(reinterpret_cast<std::byte*>(ptr_) + offset, bytes, pattern_offset, seed);
      return;
    }
    ctx_.make_current();
    for (uint64_t done = 0; done < bytes;) {
      const uint64_t n = std::min(kStaging, bytes - done);
      staging().fill(0, n, pattern_offset + done, seed);
      d_.check(d_.cuMemcpyHtoD(ptr_ + offset + done, staging().data(), n), "cuMemcpyHtoD");
      done += n;
    }
  }
  void clear(uint64_t offset, uint64_t bytes) override {
    ctx_.make_current();
    if (host_) {
      std::memset(reinterpret_cast<std::byte*>(ptr_) + offset, 0, bytes);
      return;
    }
    d_.check(d_.cuMemsetD8(ptr_ + offset, 0, bytes), "cuMemsetD8");
    d_.check(d_.cuCtxSynchronize(), "cuCtxSynchronize");
  }
  uint64_t mismatches(uint64_t offset, uint64_t bytes, uint64_t pattern_offset,
                      uint64_t seed) override {
    if (host_) {
      return count_mismatches(reinterpret_cast<std::byte*>(ptr_) + offset, bytes, pattern_offset,
                              seed);
    }
    ctx_.make_current();
    uint64_t bad = 0;
    for (uint64_t done = 0; done < bytes;) {
      const uint64_t n = std::min(kStaging, bytes - done);
      d_.check(d_.cuMemcpyDtoH(staging().data(), ptr_ + offset + done, n), "cuMemcpyDtoH");
      bad += staging().mismatches(0, n, pattern_offset + done, seed);
      done += n;
    }
    return bad;
  }

 protected:
  HostBuffer& staging() {
    if (!staging_) staging_ = std::make_unique<HostBuffer>(kStaging);
    return *staging_;
  }
  const CudaDriver& d_;
  const PrimaryContext& ctx_;
  uint64_t size_;
  bool host_;
  CUdeviceptr ptr_ = 0;
  std::unique_ptr<HostBuffer> staging_;
};

class PinnedHost final : public CudaSegment {
 public:
  PinnedHost(const PrimaryContext& ctx, uint64_t bytes) : CudaSegment(ctx, bytes, true) {
    ctx.make_current();
    void* p = nullptr;
    d_.check(d_.cuMemAllocHost(&p, bytes), "cuMemAllocHost", format_size(bytes) + " pinned");
    ptr_ = reinterpret_cast<CUdeviceptr>(p);
    std::memset(p, 0, bytes);
  }
  ~PinnedHost() override { d_.cuMemFreeHost(reinterpret_cast<void*>(ptr_)); }
};

class DeviceMemory final : public CudaSegment {
 public:
  DeviceMemory(const PrimaryContext& ctx, uint64_t bytes) : CudaSegment(ctx, bytes, false) {
    ctx.make_current();
    d_.check(d_.cuMemAlloc(&ptr_, bytes), "cuMemAlloc",
             format_size(bytes) + " on device " + std::to_string(ctx.ordinal()));
    d_.check(d_.cuMemsetD8(ptr_, 0, bytes), "cuMemsetD8");
  }
  ~DeviceMemory() override {
    ctx_.make_current();
    d_.cuMemFree(ptr_);
  }
};

// VMM memory another process exported, mapped into this process.
class ImportedVmm final : public CudaSegment {
 public:
  ImportedVmm(const PrimaryContext& ctx, int fd, uint64_t bytes) : CudaSegment(ctx, bytes, false) {
    ctx.make_current();
    d_.check(d_.cuMemImportFromShareableHandle(&handle_, reinterpret_cast<void*>(intptr_t{fd}),
                                               CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR),
             "cuMemImportFromShareableHandle");
    try {
      d_.check(d_.cuMemAddressReserve(&ptr_, bytes, 0, 0, 0), "cuMemAddressReserve");
      d_.check(d_.cuMemMap(ptr_, bytes, 0, handle_, 0), "cuMemMap");
      mapped_ = true;
      CUmemAccessDesc access{};
      access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
      access.location.id = ctx.ordinal();
      access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
      d_.check(d_.cuMemSetAccess(ptr_, bytes, &access, 1), "cuMemSetAccess");
    } catch (...) {
      release();
      throw;
    }
  }
  ~ImportedVmm() override { release(); }

 private:
  void release() noexcept {
    if (mapped_) d_.cuMemUnmap(ptr_, size_);
    if (ptr_) d_.cuMemAddressFree(ptr_, size_);
    if (handle_) d_.cuMemRelease(handle_);
    mapped_ = false;
    ptr_ = 0;
    handle_ = 0;
  }
  CUmemGenericAllocationHandle handle_ = 0;
  bool mapped_ = false;
};

// Device memory for copy pieces, grown (never shrunk) on demand; freed in its context.
class PieceBuffer {
 public:
  explicit PieceBuffer(const PrimaryContext& ctx) : d_(driver()), ctx_(ctx) {}
  ~PieceBuffer() {
    if (ptr_ == 0) return;
    ctx_.make_current();
    d_.cuMemFree(ptr_);
  }
  PieceBuffer(const PieceBuffer&) = delete;
  PieceBuffer& operator=(const PieceBuffer&) = delete;
  // Synchronous upload (untimed: BlockMover::prepare); the context must be current.
  void upload(const std::vector<CopyPiece>& pieces) {
    const uint64_t bytes = pieces.size() * sizeof(CopyPiece);
    if (bytes == 0) return;
    if (bytes > capacity_) {
      if (ptr_ != 0) d_.check(d_.cuMemFree(ptr_), "cuMemFree");
      ptr_ = 0;
      capacity_ = 0;
      d_.check(d_.cuMemAlloc(&ptr_, bytes), "cuMemAlloc", format_size(bytes) + " copy pieces");
      capacity_ = bytes;
    }
    d_.check(d_.cuMemcpyHtoD(ptr_, pieces.data(), bytes), "cuMemcpyHtoD", "copy pieces");
  }
  CUdeviceptr ptr() const { return ptr_; }

 private:
  const CudaDriver& d_;
  const PrimaryContext& ctx_;
  CUdeviceptr ptr_ = 0;
  uint64_t capacity_ = 0;
};

// One benchmark thread's copies on its own stream, with the engine chosen for the run
// (copy_plan.hpp). prepare() turns the row's ops into the engine's form once; post_all() of
// the prepared ops is then one driver call (batch) or one launch (kernel) and allocates nothing.
class CudaMover final : public BlockMover {
 public:
  CudaMover(const PrimaryContext& ctx, CudaSegment& initiator, std::vector<CudaSegment*> targets,
            bool write, CopyEngine engine, const detail::CopyKernel* kernel)
      : d_(driver()),
        ctx_(ctx),
        initiator_(initiator),
        targets_(std::move(targets)),
        write_(write),
        engine_(engine),
        kernel_(kernel),
        pieces_on_device_(ctx) {
    ctx_.make_current();
    d_.check(d_.cuStreamCreate(&stream_, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
    for (const CudaSegment* t : targets_) spans_.push_back({t->ptr(), t->size()});
    // Source order: the stream's (the benchmark fills sources before a row, synchronously).
    attributes_.srcAccessOrder = CU_MEMCPY_SRC_ACCESS_ORDER_STREAM;
  }
  ~CudaMover() override {
    ctx_.make_current();
    d_.cuStreamSynchronize(stream_);
    d_.cuStreamDestroy(stream_);
  }
  void post(const BlockOp& op) override {
    bind();
    const CUdeviceptr local = initiator_.ptr() + op.local_offset;
    const CUdeviceptr remote = targets_[op.peer]->ptr() + op.remote_offset;
    d_.check(write_ ? d_.cuMemcpyAsync(remote, local, op.bytes, stream_)
                    : d_.cuMemcpyAsync(local, remote, op.bytes, stream_),
             "cuMemcpyAsync");
  }
  void prepare(std::span<const BlockOp> ops) override {
    ctx_.make_current();  // untimed, once per row: whatever the thread did before
    bind();
    prepared_ = ops;
    if (engine_ == CopyEngine::kPerBlock) return;
    // Wait for launches that still read the previous pieces before replacing them.
    d_.check(d_.cuStreamSynchronize(stream_), "cuStreamSynchronize");
    const SegmentSpan initiator{initiator_.ptr(), initiator_.size()};
    if (engine_ == CopyEngine::kKernel) {
      plan_copies(ops, initiator, spans_, write_, kMaxPieceBytes, pieces_);
      pieces_on_device_.upload(pieces_);
      return;
    }
    plan_copies(ops, initiator, spans_, write_, 0, pieces_);  // batch: one copy per block
    srcs_.resize(pieces_.size());
    dsts_.resize(pieces_.size());
    sizes_.resize(pieces_.size());
    for (size_t i = 0; i < pieces_.size(); ++i) {
      srcs_[i] = pieces_[i].src;
      dsts_[i] = pieces_[i].dst;
      sizes_[i] = pieces_[i].bytes;
    }
  }
  void post_all(std::span<const BlockOp> ops) override {
    if (engine_ == CopyEngine::kPerBlock) {
      for (const BlockOp& op : ops) post(op);
      return;
    }
    if (ops.data() != prepared_.data() || ops.size() != prepared_.size()) prepare(ops);
    bind();
    if (pieces_.empty()) return;
    if (engine_ == CopyEngine::kKernel) {
      kernel_->launch(stream_, pieces_on_device_.ptr(), pieces_.size());
      return;
    }
    size_t first_attribute = 0;
    d_.check(d_.cuMemcpyBatchAsync(dsts_.data(), srcs_.data(), sizes_.data(), dsts_.size(),
                                   &attributes_, &first_attribute, 1, stream_),
             "cuMemcpyBatchAsync", std::to_string(dsts_.size()) + " copies");
  }
  void wait() override { d_.check(d_.cuStreamSynchronize(stream_), "cuStreamSynchronize"); }

 private:
  // Each benchmark thread sets the context once. A thread-local marker of this mover's serial
  // number, not the thread's id or the mover's address: both are reused (by later threads, which
  // start with no current context, and by later movers).
  void bind() {
    thread_local uint64_t bound = 0;
    if (bound != serial_) {
      ctx_.make_current();
      bound = serial_;
    }
  }
  static uint64_t next_serial() {
    static std::atomic<uint64_t> counter{0};
    return ++counter;
  }
  const uint64_t serial_ = next_serial();

  const CudaDriver& d_;
  const PrimaryContext& ctx_;
  CudaSegment& initiator_;
  std::vector<CudaSegment*> targets_;
  std::vector<SegmentSpan> spans_;  // targets as addresses
  bool write_;
  CopyEngine engine_;
  const detail::CopyKernel* kernel_;  // the engine's; set for CopyEngine::kKernel
  CUstream stream_ = nullptr;
  std::span<const BlockOp> prepared_;
  std::vector<CopyPiece> pieces_;         // of prepared_
  PieceBuffer pieces_on_device_;          // kernel: pieces_ uploaded
  std::vector<CUdeviceptr> srcs_, dsts_;  // batch: pieces_ as cuMemcpyBatchAsync's arrays
  std::vector<size_t> sizes_;
  CUmemcpyAttributes attributes_{};
};

std::unique_ptr<CudaSegment> make_segment(const PrimaryContext& ctx, const std::string& type,
                                          uint64_t bytes) {
  if (type == "DRAM") return std::make_unique<PinnedHost>(ctx, bytes);
  if (type == "VRAM") return std::make_unique<DeviceMemory>(ctx, bytes);
  throw InvalidArgument("--backend CUDA moves DRAM and VRAM, not " + type);
}

class CudaLocalEngine : public LocalEngine {
 public:
  Segment& initiator() override { return *initiator_; }
  Segment& target(uint32_t peer) override { return *targets_.at(peer); }
  std::unique_ptr<BlockMover> mover(uint32_t, bool write) override {
    std::vector<CudaSegment*> t;
    for (auto& s : targets_) t.push_back(s.get());
    return std::make_unique<CudaMover>(*contexts_.front(), *initiator_, std::move(t), write,
                                       engine_, kernel_.get());
  }
  std::string how() const override {
    switch (engine_) {
      case CopyEngine::kKernel:
        return "copy kernel, one launch per batch (--copy_engine kernel)";
      case CopyEngine::kBatch:
        return "cuMemcpyBatchAsync, one call per batch (--copy_engine batch)";
      default:
        return "cuMemcpyAsync per block (--copy_engine per-block)";
    }
  }

 protected:
  // Call once the segments exist: resolves --copy_engine and loads the kernel when it is used.
  void choose_engine(const XferConfig& c, bool device_memory, bool kernel_reaches) {
    const CopyRoute route{device_memory, detail::CopyKernel::built(), kernel_reaches,
                          driver().cuMemcpyBatchAsync != nullptr};
    engine_ = resolve_copy_engine(parse_copy_engine(c.copy_engine), route);
    if (engine_ == CopyEngine::kKernel) {
      contexts_.front()->make_current();
      kernel_ = std::make_unique<detail::CopyKernel>(driver(), contexts_.front()->device());
    }
  }

  // Destroyed last to first: targets and initiator before the kernel and the contexts.
  std::vector<std::unique_ptr<PrimaryContext>> contexts_;  // [0]: initiator's device
  std::unique_ptr<detail::CopyKernel> kernel_;             // in contexts_[0]
  std::unique_ptr<CudaSegment> initiator_;
  std::vector<std::unique_ptr<CudaSegment>> targets_;
  CopyEngine engine_ = CopyEngine::kPerBlock;
};

class CudaEngine final : public CudaLocalEngine {
 public:
  CudaEngine(const XferConfig& c, const XferLayout& l) {
    const auto devices = devices_of(c);
    contexts_.push_back(std::make_unique<PrimaryContext>(devices[0]));
    initiator_ = make_segment(*contexts_[0], c.initiator_seg_type, l.initiator_buffer_bytes());
    const CudaDriver& d = driver();
    bool kernel_reaches = true;  // pinned host memory and peers with access enabled
    for (uint32_t t = 0; t < l.targets; ++t) {
      const int dev = devices.size() > 1 ? devices[(t + 1) % devices.size()] : devices[0];
      contexts_.push_back(std::make_unique<PrimaryContext>(dev));
      if (dev != devices[0] && c.target_seg_type == "VRAM") {
        int can = 0;
        d.check(d.cuDeviceCanAccessPeer(&can, contexts_[0]->device(), contexts_.back()->device()),
                "cuDeviceCanAccessPeer");
        if (can) {
          contexts_[0]->make_current();
          enable_peer(*contexts_.back());
        } else {
          kernel_reaches = false;  // the kernel cannot address that device's memory
        }
      }
      targets_.push_back(
          make_segment(*contexts_.back(), c.target_seg_type, l.target_buffer_bytes()));
    }
    choose_engine(c, c.initiator_seg_type == "VRAM" || c.target_seg_type == "VRAM", kernel_reaches);
  }

 private:
  void enable_peer(const PrimaryContext& peer) {
    CUcontext peer_ctx = nullptr;
    peer.make_current();
    driver().check(driver().cuCtxGetCurrent(&peer_ctx), "cuCtxGetCurrent");
    contexts_[0]->make_current();
    const CUresult rc = driver().cuCtxEnablePeerAccess(peer_ctx, 0);
    if (rc != CUDA_SUCCESS && rc != CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED) {
      driver().check(rc, "cuCtxEnablePeerAccess");
    }
  }
};

// ---- cuda_ipc: a file descriptor over a UNIX socket ----

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

sockaddr_un abstract_address(const std::string& name, socklen_t& len) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  addr.sun_path[0] = '\0';  // abstract namespace: nothing to clean up on disk
  const size_t n = std::min(name.size(), sizeof(addr.sun_path) - 2);
  std::memcpy(addr.sun_path + 1, name.data(), n);
  len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
  return addr;
}

std::string ipc_socket_name(const XferConfig& c) {
  return "kvpager-xfer-" + c.benchmark_group;
}

// Sends or receives exactly `n` data bytes, with an optional descriptor (SCM_RIGHTS).
void send_with_fd(int sock, const void* data, size_t n, int fd) {
  char control[CMSG_SPACE(sizeof(int))] = {};
  iovec iov{const_cast<void*>(data), n};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* cm = CMSG_FIRSTHDR(&msg);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(cm), &fd, sizeof fd);
  if (::sendmsg(sock, &msg, MSG_NOSIGNAL) != static_cast<ssize_t>(n)) {
    throw_errno("sendmsg", errno, "cuda_ipc handle");
  }
}

int receive_with_fd(int sock, void* data, size_t n) {
  char control[CMSG_SPACE(sizeof(int))] = {};
  iovec iov{data, n};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  if (::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) != static_cast<ssize_t>(n)) {
    throw_errno("recvmsg", errno ? errno : EPROTO, "cuda_ipc handle");
  }
  cmsghdr* cm = CMSG_FIRSTHDR(&msg);
  if (cm == nullptr || cm->cmsg_type != SCM_RIGHTS) {
    throw DriverError("recvmsg", "no file descriptor", "the cuda_ipc target sent no handle");
  }
  int fd = -1;
  std::memcpy(&fd, CMSG_DATA(cm), sizeof fd);
  return fd;
}

// Rank 0 of cuda_ipc: connects to the target's socket (retrying until it is up), receives
// the exported allocation and maps it; finish() tells the target it may release it.
class CudaIpcInitiator final : public CudaLocalEngine {
 public:
  CudaIpcInitiator(const XferConfig& c, const XferLayout& l) {
    const auto devices = devices_of(c);
    contexts_.push_back(std::make_unique<PrimaryContext>(devices[0]));
    initiator_ = make_segment(*contexts_[0], c.initiator_seg_type, l.initiator_buffer_bytes());
    const std::string name = ipc_socket_name(c);
    socklen_t len = 0;
    const sockaddr_un addr = abstract_address(name, len);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(c.peer_timeout_s);
    for (;;) {
      sock_ = std::make_unique<Fd>(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (sock_->get() < 0) throw_errno("socket", errno);
      if (::connect(sock_->get(), reinterpret_cast<const sockaddr*>(&addr), len) == 0) break;
      if (std::chrono::steady_clock::now() > deadline) {
        throw Timeout("no cuda_ipc target listening on @" + name + " within " +
                      std::to_string(c.peer_timeout_s) + " s (start rank 1 with the same flags)");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    uint64_t bytes = 0;
    Fd handle_fd(receive_with_fd(sock_->get(), &bytes, sizeof bytes));
    targets_.push_back(std::make_unique<ImportedVmm>(*contexts_[0], handle_fd.get(), bytes));
    choose_engine(c, true, true);  // mapped with access for the initiator's device
  }
  void finish() override {
    targets_.clear();  // unmapped before the target releases it
    const char done = 1;
    if (::send(sock_->get(), &done, 1, MSG_NOSIGNAL) != 1) throw_errno("send", errno, "cuda_ipc");
  }

 private:
  std::unique_ptr<Fd> sock_;
};

}  // namespace

std::unique_ptr<LocalEngine> make_cuda_engine(const XferConfig& c, const XferLayout& l) {
  if (l.initiators != 1) {
    throw InvalidArgument("--backend CUDA runs one initiator (schemes pairwise, onetomany, tp)");
  }
  return std::make_unique<CudaEngine>(c, l);
}

std::unique_ptr<LocalEngine> connect_cuda_ipc(const XferConfig& c, const XferLayout& l) {
  if (c.target_seg_type != "VRAM") {
    throw InvalidArgument("--cuda_ipc exports device memory: use --target_seg_type VRAM");
  }
  return std::make_unique<CudaIpcInitiator>(c, l);
}

void serve_cuda_ipc_target(const XferConfig& c, const XferLayout& l) {
  if (c.target_seg_type != "VRAM") {
    throw InvalidArgument("--cuda_ipc exports device memory: use --target_seg_type VRAM");
  }
  const auto devices = devices_of(c);
  PrimaryContext ctx(devices.size() > 1 ? devices[1] : devices[0]);
  ctx.make_current();
  const CudaDriver& d = driver();
  CUmemAllocationProp prop{};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = ctx.ordinal();
  prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
  size_t granularity = 0;
  d.check(d.cuMemGetAllocationGranularity(&granularity, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM),
          "cuMemGetAllocationGranularity");
  const uint64_t bytes = round_up(l.target_buffer_bytes(), granularity);
  CUmemGenericAllocationHandle handle = 0;
  d.check(d.cuMemCreate(&handle, bytes, &prop, 0), "cuMemCreate", format_size(bytes));
  struct Release {
    const CudaDriver& d;
    CUmemGenericAllocationHandle h;
    ~Release() { d.cuMemRelease(h); }
  } release{d, handle};
  int exported = -1;
  d.check(d.cuMemExportToShareableHandle(&exported, handle,
                                         CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0),
          "cuMemExportToShareableHandle");
  Fd export_fd(exported);

  // Abstract UNIX socket: nothing on disk to clean up; the group makes the name unique.
  const std::string name = ipc_socket_name(c);
  Fd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (listener.get() < 0) throw_errno("socket", errno);
  socklen_t len = 0;
  const sockaddr_un addr = abstract_address(name, len);
  if (::bind(listener.get(), reinterpret_cast<const sockaddr*>(&addr), len) != 0) {
    throw_errno("bind", errno, "@" + name + " (another run with this --benchmark_group?)");
  }
  if (::listen(listener.get(), 1) != 0) throw_errno("listen", errno);
  pollfd pfd{listener.get(), POLLIN, 0};
  const int ready = ::poll(&pfd, 1, static_cast<int>(c.peer_timeout_s * 1000));
  if (ready <= 0) {
    throw Timeout("no cuda_ipc initiator connected to @" + name + " within " +
                  std::to_string(c.peer_timeout_s) + " s");
  }
  Fd conn(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (conn.get() < 0) throw_errno("accept4", errno);
  send_with_fd(conn.get(), &bytes, sizeof bytes, export_fd.get());
  // The initiator maps the memory and runs; keep the allocation until it says it is done (a
  // byte) or goes away (end of stream).
  char done = 0;
  while (::recv(conn.get(), &done, 1, 0) < 0 && errno == EINTR) {
  }
}

}  // namespace kvpager::transfer
