#include "kvpager/bench/transfer/posix_engine.hpp"

#include <fcntl.h>
#include <liburing.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

#include "kvpager/bench/transfer/host_buffer.hpp"
#include "kvpager/common/error.hpp"

namespace kvpager::transfer {

namespace {

constexpr unsigned kQueueDepth = 128;
constexpr uint64_t kChunk = 16ull << 20;  // bounce buffer for untimed fill/verify

class FileSegment final : public Segment {
 public:
  FileSegment(const std::string& where, uint64_t bytes, bool direct) : size_(bytes) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const bool folder = where.empty() || fs::is_directory(where, ec);
    if (folder) {
      const char* tmp = std::getenv("TMPDIR");
      const std::string dir = where.empty() ? (tmp && *tmp ? tmp : "/tmp") : where;
      std::string tpl = dir + "/kvpager_xfer_XXXXXX";
      fd_ = ::mkostemp(tpl.data(), direct ? O_DIRECT : 0);
      if (fd_ < 0) throw_errno("mkostemp", errno, tpl);
      // Unlinked at once: the open fd keeps the data, and no signal or crash can leave a
      // --total_buffer_size file behind.
      if (::unlink(tpl.c_str()) != 0) {
        const int err = errno;
        ::close(fd_);
        throw_errno("unlink", err, tpl);
      }
      path_ = tpl + " (unlinked temporary file)";
    } else {
      path_ = where;
      fd_ = ::open(where.c_str(), O_RDWR | O_CREAT | (direct ? O_DIRECT : 0), 0644);
      if (fd_ < 0) throw_errno("open", errno, where);
    }
    if (::ftruncate(fd_, static_cast<off_t>(bytes)) != 0) {
      const int err = errno;
      cleanup();
      throw_errno("ftruncate", err, path_);
    }
  }
  ~FileSegment() override { cleanup(); }

  int fd() const { return fd_; }
  const std::string& path() const { return path_; }
  uint64_t size() const override { return size_; }

  void fill(uint64_t offset, uint64_t bytes, uint64_t pattern_offset, uint64_t seed) override {
    for_chunks(offset, bytes, [&](uint64_t off, uint64_t n) {
      bounce_.fill(0, n, pattern_offset + (off - offset), seed);
      io(true, off, n);
    });
  }
  void clear(uint64_t offset, uint64_t bytes) override {
    for_chunks(offset, bytes, [&](uint64_t off, uint64_t n) {
      bounce_.clear(0, n);
      io(true, off, n);
    });
  }
  uint64_t mismatches(uint64_t offset, uint64_t bytes, uint64_t pattern_offset,
                      uint64_t seed) override {
    uint64_t bad = 0;
    for_chunks(offset, bytes, [&](uint64_t off, uint64_t n) {
      io(false, off, n);
      bad += bounce_.mismatches(0, n, pattern_offset + (off - offset), seed);
    });
    return bad;
  }

 private:
  template <class F>
  void for_chunks(uint64_t offset, uint64_t bytes, F&& f) {
    for (uint64_t done = 0; done < bytes;) {
      const uint64_t n = std::min(kChunk, bytes - done);
      f(offset + done, n);
      done += n;
    }
  }
  // Whole-block pread/pwrite; with O_DIRECT, offset and length are multiples of 4096 here
  // (checked by make_posix_engine) and the bounce buffer is page-aligned.
  void io(bool write, uint64_t off, uint64_t n) {
    for (uint64_t done = 0; done < n;) {
      const ssize_t r = write ? ::pwrite(fd_, bounce_.data() + done, n - done, off + done)
                              : ::pread(fd_, bounce_.data() + done, n - done, off + done);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) throw_errno(write ? "pwrite" : "pread", r < 0 ? errno : EIO, path_);
      done += static_cast<uint64_t>(r);
    }
  }
  void cleanup() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  uint64_t size_;
  int fd_ = -1;
  std::string path_;
  HostBuffer bounce_{kChunk};
};

class UringMover final : public BlockMover {
 public:
  UringMover(int fd, std::byte* memory, bool write, const std::string& path)
      : fd_(fd), memory_(memory), write_(write), path_(path) {
    const int rc = io_uring_queue_init(kQueueDepth, &ring_, 0);
    if (rc < 0) throw_errno("io_uring_queue_init", -rc);
  }
  ~UringMover() override { io_uring_queue_exit(&ring_); }

  void post(const BlockOp& op) override {
    if (in_flight_ == kQueueDepth) reap(1);
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {
      submit();
      reap(1);
      sqe = io_uring_get_sqe(&ring_);
    }
    // The file is the target (remote offset); memory is the initiator (local offset).
    if (write_) {
      io_uring_prep_write(sqe, fd_, memory_ + op.local_offset, static_cast<unsigned>(op.bytes),
                          op.remote_offset);
    } else {
      io_uring_prep_read(sqe, fd_, memory_ + op.local_offset, static_cast<unsigned>(op.bytes),
                         op.remote_offset);
    }
    io_uring_sqe_set_data64(sqe, op.bytes);
    ++queued_;
    ++in_flight_;
    if (queued_ >= 32) submit();
  }

  void wait() override {
    submit();
    reap(in_flight_);
  }

 private:
  void submit() {
    if (queued_ == 0) return;
    const int rc = io_uring_submit(&ring_);
    if (rc < 0) throw_errno("io_uring_submit", -rc, path_);
    queued_ = 0;
  }
  void reap(unsigned count) {
    submit();
    while (count > 0) {
      io_uring_cqe* cqe = nullptr;
      const int rc = io_uring_wait_cqe(&ring_, &cqe);
      if (rc == -EINTR) continue;
      if (rc < 0) throw_errno("io_uring_wait_cqe", -rc, path_);
      const int64_t res = cqe->res;
      const uint64_t want = io_uring_cqe_get_data64(cqe);
      io_uring_cqe_seen(&ring_, cqe);
      --in_flight_;
      --count;
      if (res < 0)
        throw_errno(write_ ? "io_uring write" : "io_uring read", static_cast<int>(-res), path_);
      if (static_cast<uint64_t>(res) != want) {
        throw DriverError(
            write_ ? "io_uring write" : "io_uring read", "short transfer",
            path_ + ": " + std::to_string(res) + " of " + std::to_string(want) + " bytes");
      }
    }
  }

  io_uring ring_{};
  int fd_;
  std::byte* memory_;
  bool write_;
  std::string path_;
  unsigned queued_ = 0;
  unsigned in_flight_ = 0;
};

class PosixEngine final : public LocalEngine {
 public:
  PosixEngine(const XferConfig& c, const XferLayout& l)
      : memory_(l.initiator_buffer_bytes()),
        file_(c.gds_filepath, l.target_buffer_bytes(), c.storage_enable_direct) {}

  Segment& initiator() override { return memory_; }
  Segment& target(uint32_t) override { return file_; }
  std::unique_ptr<BlockMover> mover(uint32_t, bool write) override {
    return std::make_unique<UringMover>(file_.fd(), memory_.data(), write, file_.path());
  }

 private:
  HostBuffer memory_;
  FileSegment file_;
};

}  // namespace

std::unique_ptr<LocalEngine> make_posix_engine(const XferConfig& c, const XferLayout& l) {
  if (l.initiators != 1 || l.targets != 1) {
    throw InvalidArgument("--backend " + c.backend +
                          " moves between one buffer and one file: use --scheme pairwise with "
                          "one initiator and one target device");
  }
  if (c.initiator_seg_type != "DRAM") {
    throw InvalidArgument("--backend " + c.backend + " with --initiator_seg_type " +
                          c.initiator_seg_type +
                          ": kvpager's POSIX engine (the GDS stand-in) moves host memory only");
  }
  if (c.storage_enable_direct) {
    for (uint64_t b : sweep(c.start_block_size, c.max_block_size)) {
      if (b % 4096 != 0) {
        throw InvalidArgument("block size " + std::to_string(b) +
                              " is not a multiple of 4096, which O_DIRECT "
                              "(--storage_enable_direct) needs");
      }
    }
  }
  if (c.max_block_size > (1ull << 31)) {
    throw InvalidArgument("--max_block_size above 2 GiB: one io_uring request moves at most 2 GiB");
  }
  return std::make_unique<PosixEngine>(c, l);
}

}  // namespace kvpager::transfer
