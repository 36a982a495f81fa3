#include "kvpager/limits/shm_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "kvpager/common/error.hpp"

namespace kvpager::limits {

namespace {

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  int release() { return std::exchange(fd, -1); }
};

void* map_fd(int fd, size_t bytes, bool writable, const std::string& path) {
  void* p =
      ::mmap(nullptr, bytes, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) throw_errno("mmap", errno, path);
  return p;
}

}  // namespace

std::optional<ShmFile> ShmFile::create_published(const std::string& path, size_t bytes,
                                                 uint32_t mode,
                                                 const std::function<void(void*)>& init) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  Fd fd{::open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode)};
  if (fd.fd < 0 && errno == EEXIST) {  // left over by a dead process of the same pid
    ::unlink(tmp.c_str());
    fd.fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
  }
  if (fd.fd < 0) throw_errno("open", errno, tmp);
  struct Unlink {
    const std::string& p;
    ~Unlink() { ::unlink(p.c_str()); }
  } unlink_tmp{tmp};
  if (::fchmod(fd.fd, mode) != 0) throw_errno("fchmod", errno, tmp);  // the umask narrows it
  // Reserve the pages now: a sparse file on a full tmpfs would fault (SIGBUS) at the first store
  // into the mapping instead of failing here.
  int rc = 0;
  do {
    rc = ::posix_fallocate(fd.fd, 0, static_cast<off_t>(bytes));
  } while (rc == EINTR);
  if (rc != 0) {
    const std::string dir = path.substr(0, path.rfind('/'));
    throw_errno("posix_fallocate", rc,
                "no room for a " + std::to_string(bytes) + "-byte registry segment " + tmp +
                    "; the file system of " + dir +
                    " (KVPAGER_SHM_DIR) is full: free space there (`kvpager gc` removes stale "
                    "segments) or point KVPAGER_SHM_DIR at a larger one");
  }
  void* data = map_fd(fd.fd, bytes, true, tmp);
  ShmFile file(path, fd.release(), data, bytes);
  std::memset(data, 0, bytes);
  init(data);
  if (::link(tmp.c_str(), path.c_str()) != 0) {
    if (errno == EEXIST) return std::nullopt;
    throw_errno("link", errno, path);
  }
  return file;
}

ShmFile ShmFile::open_mapped(const std::string& path, size_t bytes, bool writable) {
  Fd fd{::open(path.c_str(), (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NOFOLLOW)};
  if (fd.fd < 0) throw_errno("open", errno, path);
  struct stat st {};
  if (::fstat(fd.fd, &st) != 0) throw_errno("fstat", errno, path);
  if (!S_ISREG(st.st_mode)) throw StateError(path + " is not a regular file");
  if (static_cast<uint64_t>(st.st_size) != bytes) {
    throw StateError(path + " has " + std::to_string(st.st_size) + " bytes, expected " +
                     std::to_string(bytes) +
                     " (truncated, foreign or of another kvpager version); once no process uses "
                     "it, remove it (rm " +
                     path + ")");
  }
  void* data = map_fd(fd.fd, bytes, writable, path);
  return ShmFile(path, fd.release(), data, bytes);
}

ShmFile::ShmFile(ShmFile&& o) noexcept
    : path_(std::move(o.path_)),
      fd_(std::exchange(o.fd_, -1)),
      data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)) {}

ShmFile& ShmFile::operator=(ShmFile&& o) noexcept {
  if (this != &o) {
    reset();
    path_ = std::move(o.path_);
    fd_ = std::exchange(o.fd_, -1);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

ShmFile::~ShmFile() {
  reset();
}

void ShmFile::reset() noexcept {
  if (data_) ::munmap(data_, size_);
  if (fd_ >= 0) ::close(fd_);
  data_ = nullptr;
  fd_ = -1;
}

bool ShmFile::still_linked() const {
  struct stat mine {
  }, named{};
  if (fd_ < 0 || ::fstat(fd_, &mine) != 0) return false;
  if (::lstat(path_.c_str(), &named) != 0) return false;
  return mine.st_dev == named.st_dev && mine.st_ino == named.st_ino;
}

std::optional<FileCopy> read_file_copy(const std::string& path, size_t max_bytes,
                                       std::string* why) {
  Fd fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)};
  if (fd.fd < 0) {
    *why = std::string("cannot open: ") + std::strerror(errno);
    return std::nullopt;
  }
  struct stat st {};
  if (::fstat(fd.fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    *why = "not a regular file";
    return std::nullopt;
  }
  FileCopy copy;
  copy.words.assign(max_bytes / 8 + 2, 0);
  auto* buf = reinterpret_cast<char*>(copy.words.data());
  const size_t want = max_bytes + 1;
  while (copy.size < want) {
    const ssize_t n =
        ::pread(fd.fd, buf + copy.size, want - copy.size, static_cast<off_t>(copy.size));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *why = std::string("cannot read: ") + std::strerror(errno);
      return std::nullopt;
    }
    if (n == 0) break;
    copy.size += static_cast<size_t>(n);
  }
  return copy;
}

}  // namespace kvpager::limits
