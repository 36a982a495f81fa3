#pragma once
// ShmFile: one registry file under the shared-memory directory, as an open descriptor and a
// MAP_SHARED mapping of its whole size. RAII: the destructor unmaps and closes (never unlinks;
// unlinking is an explicit decision of the owner or of `kvpager delete/gc`).
//
// Files are published whole: create_published() writes and initialises a temporary file and
// link(2)s it to the final name, so no reader ever sees a half-initialised segment, and two
// creators racing for one name get exactly one winner. The temporary's pages are reserved
// (posix_fallocate) before it is mapped, so a full file system is an error here, never a SIGBUS
// at a store into the mapping; the temporary is removed whenever creation fails.
// Errors: OutOfMemory when the file system has no room (naming the directory), DriverError for
// other failed system calls; StateError for a file of the wrong size or type.
// Thread safety: an ShmFile is not shared between threads without external synchronisation;
// the mapped memory follows the rules of the segment format (atomics).
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace kvpager::limits {

class ShmFile {
 public:
  // Creates `path` with `bytes` bytes, mode `mode`, filled by `init` (zeroed before). Returns
  // nullopt when a file of that name already exists (nothing is created then).
  static std::optional<ShmFile> create_published(const std::string& path, size_t bytes,
                                                 uint32_t mode,
                                                 const std::function<void(void*)>& init);
  // Opens an existing regular file and maps it; StateError unless its size is exactly `bytes`.
  static ShmFile open_mapped(const std::string& path, size_t bytes, bool writable);

  ShmFile(ShmFile&& other) noexcept;
  ShmFile& operator=(ShmFile&& other) noexcept;
  ShmFile(const ShmFile&) = delete;
  ShmFile& operator=(const ShmFile&) = delete;
  ~ShmFile();

  void* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<const std::byte> bytes() const { return {static_cast<const std::byte*>(data_), size_}; }
  const std::string& path() const { return path_; }
  // True while `path()` still names this very file (not a replacement of the same name).
  bool still_linked() const;

 private:
  ShmFile(std::string path, int fd, void* data, size_t size)
      : path_(std::move(path)), fd_(fd), data_(data), size_(size) {}
  void reset() noexcept;

  std::string path_;
  int fd_ = -1;
  void* data_ = nullptr;
  size_t size_ = 0;
};

// A private copy of a file's bytes, read without mapping it (a file that shrinks under the
// reader cannot fault it). Words keep the copy 8-byte aligned for the decoders.
struct FileCopy {
  std::vector<uint64_t> words;
  size_t size = 0;
  std::span<const std::byte> bytes() const {
    return {reinterpret_cast<const std::byte*>(words.data()), size};
  }
};

// Reads at most `max_bytes + 1` bytes of `path` (so an oversized file is visible as such).
// Returns nullopt and sets `why` when the file cannot be opened or is not a regular file.
[[nodiscard]] std::optional<FileCopy> read_file_copy(const std::string& path, size_t max_bytes,
                                                     std::string* why);

}  // namespace kvpager::limits
