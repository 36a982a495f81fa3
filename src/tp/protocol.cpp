#include "kvpager/tp/protocol.hpp"

#include <algorithm>
#include <cstring>
#include <ctime>

namespace kvpager::tp {

uint64_t page_state_checksum(std::span<const uint32_t> mapped_pages_ascending) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](uint32_t v) {
    for (int i = 0; i < 4; ++i) {
      h ^= (v >> (8 * i)) & 0xff;
      h *= 1099511628211ull;
    }
  };
  mix(static_cast<uint32_t>(mapped_pages_ascending.size()));
  for (uint32_t p : mapped_pages_ascending) mix(p);
  return h;
}

const char* command_name(CommandKind kind) {
  switch (kind) {
    case CommandKind::kQuery:
      return "query";
    case CommandKind::kMap:
      return "map";
    case CommandKind::kUnmap:
      return "unmap";
    case CommandKind::kPing:
      return "ping";
    case CommandKind::kShutdown:
      return "shutdown";
  }
  return "?";
}

void copy_text(std::span<char> field, const std::string& text) {
  if (field.empty()) return;
  const size_t n = std::min(field.size() - 1, text.size());
  std::memcpy(field.data(), text.data(), n);
  field[n] = '\0';
}

int64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

}  // namespace kvpager::tp
