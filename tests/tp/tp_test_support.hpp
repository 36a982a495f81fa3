#pragma once
// Small host-backend configurations and process checks shared by the tp tests.
#include <signal.h>
#include <sys/types.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "kvpager/tp/tp_config.hpp"

namespace kvpager::testing {

constexpr uint64_t kTpGranularity = 64 * 1024;

// 4 layers, 2 KV heads x 64, fp16, block 16: a 32 KiB interleaved cell, two per 64 KiB page;
// 4 MiB of virtual KV space = 64 interleaved pages (4 per-layer pages of 8 handles each).
inline tp::TpConfig small_tp_config(const std::string& strategy, int tp_size) {
  tp::TpConfig c;
  c.tp_size = tp_size;
  c.strategy = strategy;
  c.device_mode = tp::DeviceMode::kSame;
  c.device_lock = tp::DeviceLockMode::kOn;  // exercised on the host too
  c.worker.backend.choice = vmm::BackendChoice::kHost;
  c.worker.backend.host_granularity = kTpGranularity;
  c.worker.backend.host_capacity_bytes = 256 * MiB;
  c.worker.geometry.num_layers = 4;
  c.worker.geometry.kv_heads = 2;
  c.worker.geometry.head_dim = 64;
  c.worker.geometry.dtype_bytes = 2;
  c.worker.geometry.block_size = 16;
  c.worker.layout = kv::KvLayout::kInterleaved;
  c.worker.virtual_bytes = 4 * MiB;
  c.worker.handle_bytes = kTpGranularity;
  c.worker.ready_pages = 4;
  c.timeout = std::chrono::seconds(5);
  c.start_timeout = std::chrono::seconds(20);
  if (const char* bin = std::getenv("KVPAGER_BINARY")) c.worker_binary = bin;
  return c;
}

// True when `pid` no longer runs: gone, or a zombie waiting for a reaper other than us.
inline bool process_gone(pid_t pid) {
  if (::kill(pid, 0) != 0) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  const auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z';
}

// Entries of `dir` whose name contains `part` (all of them for "").
inline std::vector<std::string> dir_entries(const std::string& dir, const std::string& part = "") {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.path().filename().string().find(part) != std::string::npos) out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Descriptors this process holds (the iterator's own one included, the same every time).
inline size_t open_fd_count() {
  return dir_entries("/proc/self/fd").size();
}

}  // namespace kvpager::testing
