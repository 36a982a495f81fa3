#pragma once
// The scheduler <-> worker command protocol of the tensor-parallel layer.
//
// Messages are fixed-layout PODs, copied as bytes over either transport (a UNIX SOCK_SEQPACKET
// socket or a shared-memory ring), so sender and receiver must be the same build of kvpager
// (the scheduler execs its own binary for the workers). A Command carries at most
// kMaxPagesPerCommand page ids; only wire_bytes() of it travel. Every command gets exactly one
// Reply; `seq` pairs them and is stamped per worker by the link that sends it.
// Before any command, each worker sends one Reply with seq 0 (the "hello"): its KV tensors are
// created (status kOk) or why not.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace kvpager::tp {

inline constexpr uint32_t kMaxPagesPerCommand = 1024;

enum class CommandKind : uint32_t {
  kQuery,     // kv-tensors-created query: reports the page range and a checksum of page states
  kMap,       // map every listed page (all or nothing on this rank)
  kUnmap,     // unmap every listed page (all or nothing on this rank)
  kPing,      // no-op: measures the broadcast round trip
  kShutdown,  // reply, then exit
};

struct Command {
  uint64_t seq = 0;
  CommandKind kind = CommandKind::kPing;
  uint32_t count = 0;  // page ids in `pages`
  uint32_t pages[kMaxPagesPerCommand];

  static constexpr size_t kHeaderBytes = 16;
  size_t wire_bytes() const { return kHeaderBytes + size_t{count} * sizeof(uint32_t); }
};
static_assert(offsetof(Command, pages) == Command::kHeaderBytes);

// kTimeout, kDied and kProtocol are never sent by a worker: the scheduler's link fills them in.
enum class ReplyStatus : uint32_t {
  kOk,
  kInvalidArgument,  // bad page id or a page in the wrong state; the rank changed nothing
  kOutOfMemory,      // the rank changed nothing
  kDriverError,      // `call` and `result` name the failing driver call
  kStateError,
  kFailed,  // any other error
  kTimeout,
  kDied,
  kProtocol,  // malformed or out-of-order reply
};

struct Reply {
  uint64_t seq = 0;
  ReplyStatus status = ReplyStatus::kOk;
  uint32_t num_pages = 0;         // logical pages in the rank's KV space
  uint32_t mapped_pages = 0;      // after the command
  uint32_t handles_per_page = 0;  // physical handles behind one logical page
  uint64_t state_checksum = 0;    // kQuery only: page_state_checksum() of the mapped pages
  // What a scheduler needs to know of the rank's KV space (filled in every reply): the page
  // table (handle size, block stride in a tensor, blocks) and the device that backs it.
  uint64_t handle_bytes = 0;
  uint64_t cell_bytes = 0;
  uint64_t num_blocks = 0;
  int32_t device = 0;        // the backend's device ordinal (as this rank's process sees it)
  uint32_t device_kind = 0;  // vmm::BackendKind of the rank's backend
  int64_t start_ns = 0;      // CLOCK_MONOTONIC when the worker began the command
  int64_t end_ns = 0;        // ... and when it finished it
  char call[64] = {};        // kDriverError: the failing call
  char result[96] = {};      // kDriverError: the CUresult / errno name
  char message[320] = {};    // any error: what went wrong (worker's words)
};

// FNV-1a over the ascending ids of mapped pages; both sides compute it the same way.
uint64_t page_state_checksum(std::span<const uint32_t> mapped_pages_ascending);

const char* command_name(CommandKind kind);

// Copies `text` into a fixed field, truncating and always NUL-terminating.
void copy_text(std::span<char> field, const std::string& text);

// Monotonic clock in nanoseconds (CLOCK_MONOTONIC, comparable across processes of one host).
int64_t monotonic_ns();

}  // namespace kvpager::tp
