// limits_test_helper: the model process of the multi-process limits tests. One KvCache on the
// host backend registered in the shared-memory registry (prefix from KVPAGER_SHM_PREFIX),
// driven by its arguments and, in `serve` mode, by commands on stdin (one per line; one
// answer line each on stdout).
//
//   serve NAME MAX_IDLE        alloc N (ok, oom or timeout) | free N | fill | check | stats | quit
//   churn NAME SECONDS SEED    after a line on stdin, random alloc/free for SECONDS; prints "done
//   allocs=A refused=R" hold-lock DEVICE           takes the device segment's lock, prints
//   "locked", sleeps register-and-die NAME      registers, charges 1 MiB, prints "registered",
//   _exit(0) without
//                              cleaning up (a process that vanished)
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kv/kv_test_support.hpp"
#include "kvpager/common/error.hpp"
#include "kvpager/limits/device_budget.hpp"
#include "kvpager/limits/instance_registration.hpp"
#include "kvpager/limits/robust_mutex.hpp"

using namespace kvpager;

namespace {

std::shared_ptr<vmm::HostBackend> backend() {
  return testing::test_host_backend();
}

std::shared_ptr<limits::InstanceRegistration> register_instance(const std::string& name,
                                                                const vmm::Backend& b) {
  limits::InstanceSpec spec;
  spec.name = name;
  spec.model = "test-model";
  spec.device = "host0";
  spec.device_total_bytes = b.memory_info().total_bytes;
  return limits::InstanceRegistration::create(limits::registry_config_from_env(), spec);
}

kv::KvCacheConfig cache_config(std::shared_ptr<limits::InstanceRegistration> reg, size_t max_idle) {
  kv::KvCacheConfig c = testing::small_cache_config(kv::KvLayout::kInterleaved, 4096, true);
  c.max_idle_pages = max_idle;
  c.reserve_pages = 1;
  c.pool_min_ready = 2;
  c.pool_max_ready = 8;
  c.registry_link = std::move(reg);
  return c;
}

uint64_t* block_word(const kv::KvCache& cache, BlockId id) {
  const kv::TensorView t = cache.tensor(0, 0);
  return reinterpret_cast<uint64_t*>(t.base +
                                     static_cast<uint64_t>(id.value) * t.block_stride_bytes);
}

int serve(const std::string& name, size_t max_idle) {
  auto b = backend();
  auto reg = register_instance(name, *b);
  kv::KvCache cache(b, cache_config(reg, max_idle));
  std::vector<BlockId> held;
  std::printf("ready\n");
  std::fflush(stdout);
  std::string cmd;
  while (std::cin >> cmd) {
    if (cmd == "alloc" || cmd == "free") {
      size_t n = 0;
      std::cin >> n;
      if (cmd == "alloc") {
        try {
          auto got = cache.alloc(n);
          held.insert(held.end(), got.begin(), got.end());
          std::printf("ok\n");
        } catch (const OutOfMemory&) {
          std::printf("oom\n");
        } catch (const Timeout& e) {  // the device lock stayed held (its holder is stopped)
          std::fprintf(stderr, "%s\n", e.what());
          std::printf("timeout\n");
        }
      } else {
        n = std::min(n, held.size());
        cache.free(std::span<const BlockId>(held.data() + held.size() - n, n));
        held.resize(held.size() - n);
        std::printf("ok\n");
      }
    } else if (cmd == "fill" || cmd == "check") {
      bool good = true;
      for (BlockId id : held) {
        uint64_t* w = block_word(cache, id);  // faults if the page were taken away
        const uint64_t want = 0x6b7670616765ull ^ static_cast<uint64_t>(id.value);
        if (cmd == "fill") {
          *w = want;
        } else {
          good = good && *w == want && cache.is_allocated(id);
        }
      }
      std::printf(good ? "ok\n" : "bad\n");
    } else if (cmd == "stats") {
      const kv::KvCacheStats s = cache.stats();
      std::printf("mapped=%llu charged=%llu in_use=%llu page=%llu\n",
                  static_cast<unsigned long long>(s.mapped_bytes),
                  static_cast<unsigned long long>(reg->charged_bytes()),
                  static_cast<unsigned long long>(s.in_use_bytes),
                  static_cast<unsigned long long>(s.page_bytes));
    } else if (cmd == "quit") {
      break;
    } else {
      std::printf("unknown command %s\n", cmd.c_str());
    }
    std::fflush(stdout);
  }
  cache.free(held);
  return 0;
}

int churn(const std::string& name, double seconds, unsigned seed) {
  auto b = backend();
  auto reg = register_instance(name, *b);
  kv::KvCache cache(b, cache_config(reg, 2));
  std::mt19937 rng(seed);
  std::vector<std::vector<BlockId>> held;
  uint64_t allocs = 0, refused = 0;
  std::printf("ready\n");
  std::fflush(stdout);
  std::string go;
  std::cin >> go;  // every process is constructed before any starts allocating
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (held.empty() || rng() % 3 != 0) {
      try {
        held.push_back(cache.alloc(1 + rng() % 8));
        ++allocs;
      } catch (const OutOfMemory&) {
        ++refused;
        // Under pressure: give back the oldest request so the load keeps moving.
        if (!held.empty()) {
          cache.free(held.front());
          held.erase(held.begin());
        }
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    } else {
      const size_t i = rng() % held.size();
      cache.free(held[i]);
      held.erase(held.begin() + static_cast<long>(i));
    }
  }
  for (auto& h : held) cache.free(h);
  std::printf("done allocs=%llu refused=%llu\n", static_cast<unsigned long long>(allocs),
              static_cast<unsigned long long>(refused));
  return 0;
}

int hold_lock(const std::string& device) {
  auto b = backend();
  auto dev = limits::DeviceBudget::open_or_create(limits::registry_config_from_env(), device,
                                                  b->memory_info().total_bytes);
  const limits::RobustLock held = dev.lock();
  std::printf("locked\n");
  std::fflush(stdout);
  for (;;) ::pause();
}

int register_and_die(const std::string& name) {
  auto b = backend();
  auto reg = register_instance(name, *b);
  if (!reg->try_charge(1 << 20)) return 3;
  std::printf("registered\n");
  std::fflush(stdout);
  ::_exit(0);
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> a(argv + 1, argv + argc);
  try {
    if (a.size() == 3 && a[0] == "serve") return serve(a[1], std::stoul(a[2]));
    if (a.size() == 4 && a[0] == "churn") return churn(a[1], std::stod(a[2]), std::stoul(a[3]));
    if (a.size() == 2 && a[0] == "hold-lock") return hold_lock(a[1]);
    if (a.size() == 2 && a[0] == "register-and-die") return register_and_die(a[1]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "limits_test_helper: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "usage: see the comment at the top of limits_test_helper.cpp\n");
  return 2;
}
