#pragma once
// A private registry namespace per test: a unique KVPAGER_SHM_PREFIX under /dev/shm, so tests
// running in parallel never see each other's segments, and every file under it is removed at
// the end of the test.
#include <dirent.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <string>

#include "kvpager/limits/registry_config.hpp"

namespace kvpager::testing {

class ScopedRegistry {
 public:
  explicit ScopedRegistry(const std::string& tag) {
    static std::atomic<int> counter{0};
    config.prefix =
        "kvptest-" + std::to_string(::getpid()) + "-" + tag + "-" + std::to_string(counter++) + "-";
    env["KVPAGER_SHM_PREFIX"] = config.prefix;
    env["KVPAGER_SHM_DIR"] = config.dir;
    clean();
  }
  ~ScopedRegistry() { clean(); }
  ScopedRegistry(const ScopedRegistry&) = delete;
  ScopedRegistry& operator=(const ScopedRegistry&) = delete;

  std::string path(const std::string& rest) const {
    return config.dir + "/" + config.prefix + rest;
  }

  void clean() const {
    DIR* d = ::opendir(config.dir.c_str());
    if (!d) return;
    while (const dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name.compare(0, config.prefix.size(), config.prefix) == 0) {
        ::unlink((config.dir + "/" + name).c_str());
      }
    }
    ::closedir(d);
  }

  limits::RegistryConfig config;
  std::map<std::string, std::string> env;
};

}  // namespace kvpager::testing
