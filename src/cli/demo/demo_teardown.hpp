#pragma once
// DemoTeardown: what a demo leaves behind in its own registry namespace, removed when this
// goes away (after the processes that used it): segments of dead instances (gc, e.g. of a
// worker that had to be SIGKILLed) and each device segment once it has no member — so a
// finished demo leaves no segment. The coordinator always sweeps; a worker sweeps only when
// its coordinator is gone (the last worker out then removes the device segment), so a killed
// coordinator leaves nothing either. Never throws: a failure is one warning line.
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <utility>

#include "kvpager/limits/registry.hpp"

namespace kvpager::cli {

class DemoTeardown {
 public:
  // Sweeps on destruction when `armed` (empty: always) says so.
  explicit DemoTeardown(const limits::RegistryConfig& rc, std::function<bool()> armed = {})
      : registry_(rc), armed_(std::move(armed)) {}
  ~DemoTeardown() {
    try {
      if (armed_ && !armed_()) return;
      registry_.gc();
      for (const auto& d : registry_.scan().devices) {
        if (d.live_members == 0 && d.record.members.empty()) ::unlink(d.path.c_str());
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "kvpager: warning: demo: cleaning up %s/%s*: %s\n",
                   registry_.config().dir.c_str(), registry_.config().prefix.c_str(), e.what());
    }
  }
  DemoTeardown(const DemoTeardown&) = delete;
  DemoTeardown& operator=(const DemoTeardown&) = delete;

 private:
  limits::Registry registry_;
  std::function<bool()> armed_;
};

}  // namespace kvpager::cli
