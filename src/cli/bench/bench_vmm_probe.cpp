// kvpager bench vmm-probe: what makes one handle's map + set-access and unmap cost more in some
// setups than in others (issue 9: tp 4 and the per-layer layout pay about twice the per-handle
// driver cost of one process mapping adjacent handles). Every row times single handles (map,
// set access, unmap separately; mean/p50/p99 in us) in one controlled setting:
//   first  first-touch: the process' first calls one by one, and replicas of `bench vmm`'s
//          single-handle section (200 MiB reservation after an 8 GiB reserve/free, create and
//          release in every cycle) and of its 2 MiB sweep row, early and again at the very end
//   resv   size of the reservation holding the handle (2 MiB ... 64 GiB)
//   nresv  number of reservations alive (1 ... 64): a handle cycled in the first one, and a
//          burst of one handle per reservation (kvcached's per-layer tensors)
//   mapped handles already mapped next to the cycled one (0 ... 1000)
//   stride a burst of 64 handles 2 MiB ... 1.25 GiB apart in one reservation (interleaved pages
//          vs kvpager's per-layer tensors of an 80 GB space)
//   coalesce one set-access (and one unmap, where the driver takes it) over N contiguous handles
//   ctx    0 ... 3 other processes holding a context on the device and sleeping; 3 processes
//          spinning on CPUs without a context; 3 processes doing VMM work in turns with this
//          one (what tp ranks do with the device lock) or at the same time (without it)
// Children are this binary (`bench vmm-probe --child MODE`), so nothing CUDA crosses a fork.
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstdio>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_clock.hpp"
#include "bench/text_table.hpp"
#include "cli_checks.hpp"
#include "command_registry.hpp"
#include "kvpager/common/error.hpp"
#include "kvpager/common/latency_stats.hpp"
#include "kvpager/common/units.hpp"
#include "kvpager/vmm/backend.hpp"

extern char** environ;

namespace kvpager::cli {
namespace {

struct ProbeConfig {
  std::string backend = "auto";
  int device = 0;
  int samples = 200;  // handles timed per row
  bool json = false;
  bool no_children = false;
  // Child side (hidden).
  std::string child;  // "", "idle", "busy", "vmm"
  int child_handles = 64;
  std::string child_stride = "1280MiB";
};

using Json = nlohmann::json;
using vmm::Access;
using vmm::Backend;
using vmm::PhysicalHandle;

constexpr uint64_t kPerLayerStride = 1280 * MiB;  // 80 GB / 64 tensors

std::shared_ptr<Backend> open_backend(const ProbeConfig& cfg) {
  vmm::BackendConfig bc = vmm::backend_config_from_env();
  bc.choice = vmm::parse_backend_choice(cfg.backend);
  bc.device = cfg.device;
  return vmm::make_backend(bc);
}

// Per-handle samples (us).
struct Samples {
  std::vector<double> map, access, map_access, unmap;
};

Json stats(const std::vector<double>& v) {
  const LatencySummary s = summarize(v);
  return {{"mean", s.mean}, {"p50", s.p50}, {"p99", s.p99}, {"max", s.max}, {"n", s.count}};
}

// A reservation and the handles a row maps into it; everything is given back on scope exit.
class Arena {
 public:
  Arena(Backend& b, uint64_t reserve_bytes, size_t handles) : b_(b), bytes_(reserve_bytes) {
    hb_ = std::max<size_t>(b.granularity(), 2 * MiB);
    va_ = b.reserve(reserve_bytes, hb_);
    try {
      for (size_t i = 0; i < handles; ++i) hs_.push_back(b.create(hb_));
    } catch (...) {
      cleanup();
      throw;
    }
  }
  ~Arena() { cleanup(); }
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  uintptr_t va() const { return va_; }
  size_t hb() const { return hb_; }
  std::vector<PhysicalHandle>& handles() { return hs_; }
  // Maps handles[i] at vas[i] one by one, timing each call, then unmaps them (timed).
  void burst(const std::vector<uintptr_t>& vas, Samples& s, size_t first_handle = 0) {
    for (size_t i = 0; i < vas.size(); ++i) {
      const double m = time_us([&] { b_.map(vas[i], hb_, hs_[first_handle + i], 0); });
      mapped_.push_back(vas[i]);
      const double a = time_us([&] { b_.set_access(vas[i], hb_, Access::kReadWrite); });
      s.map.push_back(m);
      s.access.push_back(a);
      s.map_access.push_back(m + a);
    }
    for (uintptr_t va : vas) {
      s.unmap.push_back(time_us([&] { b_.unmap(va, hb_); }));
      mapped_.pop_front_value(va);
    }
  }
  // Untimed: maps handles[first..first+n) at va + slot*hb (for "already mapped" rows).
  void premap(size_t first, size_t n, size_t slot) {
    for (size_t i = 0; i < n; ++i) {
      const uintptr_t va = va_ + (slot + i) * hb_;
      b_.map(va, hb_, hs_[first + i], 0);
      mapped_.push_back(va);
      b_.set_access(va, hb_, Access::kReadWrite);
    }
  }
  void unmap_all() {
    for (uintptr_t va : mapped_.items) b_.unmap(va, hb_);
    mapped_.items.clear();
  }

 private:
  struct MappedSet {
    std::vector<uintptr_t> items;
    void push_back(uintptr_t v) { items.push_back(v); }
    void pop_front_value(uintptr_t v) {
      for (size_t i = 0; i < items.size(); ++i) {
        if (items[i] == v) {
          items.erase(items.begin() + static_cast<std::ptrdiff_t>(i));
          return;
        }
      }
    }
  };
  void cleanup() {
    try {
      unmap_all();
    } catch (...) {
    }
    for (auto h : hs_) {
      try {
        b_.release(h);
      } catch (...) {
      }
    }
    hs_.clear();
    try {
      if (va_ != 0) b_.free_reservation(va_, bytes_);
    } catch (...) {
    }
    va_ = 0;
  }
  Backend& b_;
  uint64_t bytes_;
  size_t hb_ = 0;
  uintptr_t va_ = 0;
  std::vector<PhysicalHandle> hs_;
  MappedSet mapped_;
};

// Cycles one handle at `va` `n` times (map, set access, unmap).
void cycle(Arena& a, uintptr_t va, int n, Samples& s, size_t handle = 0) {
  std::vector<uintptr_t> one{va};
  for (int i = 0; i < n; ++i) a.burst(one, s, handle);
}

// Bursts of `vas.size()` handles until at least n samples.
void bursts(Arena& a, const std::vector<uintptr_t>& vas, int n, Samples& s) {
  for (int done = 0; done < n; done += static_cast<int>(vas.size())) a.burst(vas, s);
}

// -------------------------------------------------------------------------------------------
// Child processes.

struct Child {
  pid_t pid = -1;
  int to = -1;    // its stdin
  int from = -1;  // its stdout
};

bool read_byte(int fd, char& c) {
  ssize_t n;
  do {
    n = ::read(fd, &c, 1);
  } while (n < 0 && errno == EINTR);
  return n == 1;
}

void write_byte(int fd, char c) {
  ssize_t n;
  do {
    n = ::write(fd, &c, 1);
  } while (n < 0 && errno == EINTR);
  if (n != 1) throw_errno("write", errno, "vmm-probe child pipe");
}

Child spawn_child(const ProbeConfig& cfg, const std::string& mode) {
  int in[2], out[2];
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) throw_errno("pipe2", errno);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  std::vector<std::string> args = {"kvpager",
                                   "bench",
                                   "vmm-probe",
                                   "--child",
                                   mode,
                                   "--backend",
                                   cfg.backend,
                                   "--device",
                                   std::to_string(cfg.device),
                                   "--child-handles",
                                   std::to_string(cfg.child_handles)};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, "/proc/self/exe", &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(in[0]);
  ::close(out[1]);
  if (rc != 0) {
    ::close(in[1]);
    ::close(out[0]);
    throw_errno("posix_spawn", rc, "vmm-probe child");
  }
  return Child{pid, in[1], out[0]};
}

void wait_ready(Child& c) {
  char r = 0;
  if (!read_byte(c.from, r) || r != 'r') throw Error("vmm-probe child failed to start");
}

void stop_child(Child& c) {
  if (c.pid <= 0) return;
  ::close(c.to);
  for (int i = 0; i < 300; ++i) {  // 3 s, then kill
    if (waitpid(c.pid, nullptr, WNOHANG) == c.pid) {
      c.pid = -1;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (c.pid > 0) {
    ::kill(c.pid, SIGKILL);
    waitpid(c.pid, nullptr, 0);
  }
  ::close(c.from);
  c.pid = -1;
}

struct Children {
  std::vector<Child> list;
  ~Children() {
    for (auto& c : list) stop_child(c);
  }
  void start(const ProbeConfig& cfg, const std::string& mode, int n) {
    const size_t first = list.size();
    for (int i = 0; i < n; ++i) list.push_back(spawn_child(cfg, mode));  // start in parallel
    for (size_t i = first; i < list.size(); ++i) wait_ready(list[i]);
  }
  void stop_one() {
    stop_child(list.back());
    list.pop_back();
  }
  void stop_all() {
    while (!list.empty()) stop_one();
  }
  void command(size_t i, char cmd) { write_byte(list[i].to, cmd); }
  void await(size_t i) {
    char a = 0;
    if (!read_byte(list[i].from, a) || a != 'a') throw Error("vmm-probe child died");
  }
};

int run_child(const ProbeConfig& cfg) {
  if (cfg.child == "busy") {
    write_byte(1, 'r');
    pollfd p{0, POLLIN, 0};
    for (;;) {
      const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(1);
      while (std::chrono::steady_clock::now() < end) {
      }
      if (::poll(&p, 1, 0) != 0) return 0;  // EOF or anything: leave
    }
  }
  auto b = open_backend(cfg);
  (void)b->memory_info();  // the context exists now
  if (cfg.child == "idle") {
    write_byte(1, 'r');
    char c;
    while (read_byte(0, c)) {
    }
    return 0;
  }
  if (cfg.child != "vmm") throw InvalidArgument("--child idle|busy|vmm");
  const uint64_t stride = cfg.child_handles > 1 ? parse_size(cfg.child_stride) : 2 * MiB;
  const auto n = static_cast<size_t>(cfg.child_handles);
  Arena a(*b, stride * n, n);
  std::vector<uintptr_t> vas;
  for (size_t i = 0; i < n; ++i) vas.push_back(a.va() + i * stride);
  write_byte(1, 'r');
  char c;
  while (read_byte(0, c)) {
    if (c == 'm') {
      for (size_t i = 0; i < n; ++i) {
        b->map(vas[i], a.hb(), a.handles()[i], 0);
        b->set_access(vas[i], a.hb(), Access::kReadWrite);
      }
    } else if (c == 'u') {
      for (size_t i = 0; i < n; ++i) b->unmap(vas[i], a.hb());
    }
    write_byte(1, 'a');
  }
  return 0;
}

// -------------------------------------------------------------------------------------------

struct Report {
  Json rows = Json::array();
  TextTable table{{"section", "case", "n", "map+access mean", "p50", "p99", "(access mean)",
                   "unmap mean", "p50", "p99"}};
  void add(const std::string& section, const std::string& name, const Samples& s,
           Json params = Json::object()) {
    Json row = {{"section", section}, {"case", name}, {"params", std::move(params)}};
    row["map_us"] = stats(s.map);
    row["access_us"] = stats(s.access);
    row["map_access_us"] = stats(s.map_access);
    row["unmap_us"] = stats(s.unmap);
    rows.push_back(row);
    const LatencySummary ma = summarize(s.map_access), u = summarize(s.unmap),
                         ac = summarize(s.access);
    table.add_row({section, name, std::to_string(ma.count), fixed(ma.mean), fixed(ma.p50),
                   fixed(ma.p99), fixed(ac.mean), fixed(u.mean), fixed(u.p50), fixed(u.p99)});
  }
};

// bench vmm's single-handle section: create, map, access, unmap, release per cycle at the start
// of a `resv`-byte reservation. Returns the per-cycle samples (create/release not counted).
Samples bench_vmm_cycle(Backend& b, uint64_t resv, int n) {
  const size_t hb = std::max<size_t>(b.granularity(), 2 * MiB);
  Samples s;
  const uintptr_t va = b.reserve(resv, hb);
  for (int i = 0; i < n; ++i) {
    PhysicalHandle h = b.create(hb);
    const double m = time_us([&] { b.map(va, hb, h, 0); });
    const double a = time_us([&] { b.set_access(va, hb, Access::kReadWrite); });
    const double u = time_us([&] { b.unmap(va, hb); });
    b.release(h);
    s.map.push_back(m);
    s.access.push_back(a);
    s.map_access.push_back(m + a);
    s.unmap.push_back(u);
  }
  b.free_reservation(va, resv);
  return s;
}

Samples slice(const Samples& s, size_t from, size_t to) {
  auto cut = [&](const std::vector<double>& v) {
    return std::vector<double>(v.begin() + static_cast<std::ptrdiff_t>(std::min(from, v.size())),
                               v.begin() + static_cast<std::ptrdiff_t>(std::min(to, v.size())));
  };
  return {cut(s.map), cut(s.access), cut(s.map_access), cut(s.unmap)};
}

void section_first_touch(Backend& b, const ProbeConfig& cfg, Report& r, Json& first, bool late) {
  const int n = cfg.samples;
  const std::string tag = late ? "first(late)" : "first";
  if (!late) {
    // The process' very first map/access/unmap calls, one by one (one pre-created handle).
    Arena a(b, 200 * MiB, 1);
    Samples s;
    cycle(a, a.va(), 20, s);
    first["first_20_cycles"] = {{"map_us", s.map}, {"access_us", s.access}, {"unmap_us", s.unmap}};
    r.add(tag, "process' first 20 cycles", s);
  }
  // bench vmm section 1: 8 GiB reserve/free, 200 MiB reservation, create/release per cycle.
  const uintptr_t big = b.reserve(8 * GiB, 2 * MiB);
  b.free_reservation(big, 8 * GiB);
  const Samples v = bench_vmm_cycle(b, 200 * MiB, 20 + 2 * n);
  first[late ? "bench_vmm_replica_late_first_20" : "bench_vmm_replica_first_20"] = {
      {"access_us", slice(v, 0, 20).access}, {"unmap_us", slice(v, 0, 20).unmap}};
  r.add(tag, "bench-vmm replica, cycles 0-19", slice(v, 0, 20), {{"reservation", "200MiB"}});
  r.add(tag, "bench-vmm replica, warm-up part", slice(v, 20, 20 + n), {{"reservation", "200MiB"}});
  r.add(tag, "bench-vmm replica, measured part", slice(v, 20 + n, 20 + 2 * n),
        {{"reservation", "200MiB"}});
  // bench vmm's sweep row at 2 MiB: a 2 MiB reservation, same cycle.
  r.add(tag, "sweep replica (2 MiB reservation)", bench_vmm_cycle(b, 2 * MiB, n),
        {{"reservation", "2MiB"}});
  if (!late) {
    Arena a(b, 200 * MiB, 1);  // pre-created handle, no create/release in the cycle
    Samples s;
    cycle(a, a.va(), n, s);
    r.add(tag, "200 MiB resv, pre-created handle", s, {{"reservation", "200MiB"}});
  }
}

void section_reservation_size(Backend& b, const ProbeConfig& cfg, Report& r) {
  for (uint64_t bytes : {2 * MiB, 32 * MiB, 256 * MiB, 2 * GiB, 8 * GiB, 64 * GiB}) {
    Arena a(b, bytes, 1);
    Samples s;
    cycle(a, a.va(), cfg.samples, s);
    r.add("resv", format_size(bytes), s, {{"reservation_bytes", bytes}});
  }
}

void section_reservations_alive(Backend& b, const ProbeConfig& cfg, Report& r) {
  for (int count : {1, 4, 16, 64}) {
    std::vector<std::unique_ptr<Arena>> arenas;
    for (int i = 0; i < count; ++i) arenas.push_back(std::make_unique<Arena>(b, 1 * GiB, 0));
    Arena& first = *arenas[0];
    first.handles().push_back(b.create(first.hb()));
    Samples s;
    cycle(first, first.va(), cfg.samples, s);
    r.add("nresv", std::to_string(count) + " x 1 GiB, cycle in one", s, {{"reservations", count}});
    // A burst of one handle per reservation (kvcached's per-layer tensors): own Arena handles.
    Arena hs(b, 2 * MiB, static_cast<size_t>(count));
    Samples t;
    for (int done = 0; done < cfg.samples; done += count) {
      for (int i = 0; i < count; ++i) {
        const uintptr_t va = arenas[static_cast<size_t>(i)]->va();
        const double m =
            time_us([&] { b.map(va, hs.hb(), hs.handles()[static_cast<size_t>(i)], 0); });
        const double ac = time_us([&] { b.set_access(va, hs.hb(), Access::kReadWrite); });
        t.map.push_back(m);
        t.access.push_back(ac);
        t.map_access.push_back(m + ac);
      }
      for (int i = 0; i < count; ++i) {
        const uintptr_t va = arenas[static_cast<size_t>(i)]->va();
        t.unmap.push_back(time_us([&] { b.unmap(va, hs.hb()); }));
      }
    }
    r.add("nresv", std::to_string(count) + " x 1 GiB, burst one per resv", t,
          {{"reservations", count}});
  }
}

void section_already_mapped(Backend& b, const ProbeConfig& cfg, Report& r) {
  for (size_t m : {size_t{0}, size_t{10}, size_t{100}, size_t{1000}}) {
    Arena a(b, 4 * GiB, m + 1);
    a.premap(1, m, 0);
    Samples s;
    cycle(a, a.va() + (m + 1) * a.hb(), cfg.samples, s, 0);  // one slot gap after the mapped run
    r.add("mapped", std::to_string(m) + " mapped in the resv", s, {{"mapped", m}});
  }
}

void section_stride(Backend& b, const ProbeConfig& cfg, Report& r) {
  for (uint64_t stride : {2 * MiB, 64 * MiB, 1 * GiB, kPerLayerStride}) {
    Arena a(b, 64 * stride, 64);
    std::vector<uintptr_t> vas;
    for (uint64_t i = 0; i < 64; ++i) vas.push_back(a.va() + i * stride);
    Samples s;
    bursts(a, vas, std::max(cfg.samples, 256), s);
    r.add("stride", "64 handles " + format_size(stride) + " apart", s, {{"stride_bytes", stride}});
  }
}

void section_coalesce(Backend& b, Json& out, TextTable& t) {
  const int reps = 10;
  for (size_t n : {size_t{1}, size_t{2}, size_t{4}, size_t{8}, size_t{16}, size_t{64}}) {
    Arena a(b, 64 * 2 * MiB, n);
    const size_t hb = a.hb();
    std::vector<double> maps, access, unmap_each, unmap_one;
    std::string unmap_one_error;
    for (int rep = 0; rep < 2 * reps; ++rep) {
      const bool one_unmap = rep >= reps;
      maps.push_back(time_us([&] {
        for (size_t i = 0; i < n; ++i) b.map(a.va() + i * hb, hb, a.handles()[i], 0);
      }));
      access.push_back(time_us([&] { b.set_access(a.va(), n * hb, Access::kReadWrite); }));
      if (one_unmap && unmap_one_error.empty()) {
        try {
          unmap_one.push_back(time_us([&] { b.unmap(a.va(), n * hb); }));
          continue;
        } catch (const std::exception& e) {
          unmap_one_error = e.what();
        }
      }
      const double u = time_us([&] {
        for (size_t i = 0; i < n; ++i) b.unmap(a.va() + i * hb, hb);
      });
      if (!one_unmap) unmap_each.push_back(u);
    }
    const double acc = summarize(access).mean;
    Json row = {{"handles", n},
                {"map_all_us", stats(maps)},
                {"one_set_access_us", stats(access)},
                {"set_access_per_handle_us", acc / static_cast<double>(n)},
                {"unmap_each_total_us", stats(unmap_each)},
                {"one_unmap_supported", unmap_one_error.empty()}};
    if (unmap_one_error.empty()) {
      row["one_unmap_us"] = stats(unmap_one);
    } else {
      row["one_unmap_error"] = unmap_one_error;
    }
    out.push_back(row);
    t.add_row({std::to_string(n), fixed(summarize(maps).mean), fixed(acc),
               fixed(acc / static_cast<double>(n)), fixed(summarize(unmap_each).mean),
               unmap_one_error.empty() ? fixed(summarize(unmap_one).mean) : "refused"});
  }
}

// Rounds of (this process, then each child, or all at once): each maps `k` handles, then each
// unmaps them. Returns this process' samples and the round wall per handle.
void turns(Backend& b, Children& kids, size_t k, uint64_t stride, bool concurrent, int rounds,
           Samples& own, std::vector<double>& wall_map, std::vector<double>& wall_unmap) {
  Arena a(b, stride * k, k);
  std::vector<uintptr_t> vas;
  for (size_t i = 0; i < k; ++i) vas.push_back(a.va() + i * stride);
  const double handles = static_cast<double>(k * (kids.list.size() + 1));
  for (int round = 0; round < rounds; ++round) {
    for (char phase : {'m', 'u'}) {
      const double t0 = now_us();
      if (concurrent) {
        for (size_t c = 0; c < kids.list.size(); ++c) kids.command(c, phase);
      }
      for (size_t i = 0; i < k; ++i) {
        if (phase == 'm') {
          const double m = time_us([&] { b.map(vas[i], a.hb(), a.handles()[i], 0); });
          const double ac = time_us([&] { b.set_access(vas[i], a.hb(), Access::kReadWrite); });
          own.map.push_back(m);
          own.access.push_back(ac);
          own.map_access.push_back(m + ac);
        } else {
          own.unmap.push_back(time_us([&] { b.unmap(vas[i], a.hb()); }));
        }
      }
      for (size_t c = 0; c < kids.list.size(); ++c) {
        if (!concurrent) kids.command(c, phase);
        kids.await(c);
      }
      (phase == 'm' ? wall_map : wall_unmap).push_back((now_us() - t0) / handles);
    }
  }
}

void section_contexts(Backend& b, const ProbeConfig& cfg, Report& r, Json& turn_rows,
                      TextTable& turn_table) {
  auto measure = [&](const std::string& name, Json params) {
    {
      Arena a(b, 2 * MiB, 1);
      Samples s;
      cycle(a, a.va(), cfg.samples, s);
      r.add("ctx", name + ", cycle one handle", s, params);
    }
    Arena a(b, 64 * kPerLayerStride, 64);
    std::vector<uintptr_t> vas;
    for (uint64_t i = 0; i < 64; ++i) vas.push_back(a.va() + i * kPerLayerStride);
    Samples s;
    bursts(a, vas, std::max(cfg.samples, 256), s);
    r.add("ctx", name + ", burst 64 per-layer", s, params);
  };
  measure("0 other contexts", {{"contexts", 0}});
  if (cfg.no_children) return;
  Children kids;
  kids.start(cfg, "idle", 3);
  for (int c = 3; c >= 1; --c) {
    measure(std::to_string(c) + " idle contexts", {{"contexts", c}});
    kids.stop_one();
  }
  kids.start(cfg, "busy", 3);
  measure("3 CPU spinners, no context", {{"spinners", 3}});
  kids.stop_all();
  // VMM work by 3 other processes, like tp 4 on one device.
  for (size_t k : {size_t{1}, size_t{64}}) {
    ProbeConfig child = cfg;
    child.child_handles = static_cast<int>(k);
    kids.start(child, "vmm", 3);
    const uint64_t stride = k == 1 ? 2 * MiB : kPerLayerStride;
    const int rounds = k == 1 ? cfg.samples : std::max(1, cfg.samples / 64);
    for (bool concurrent : {false, true}) {
      Samples own;
      std::vector<double> wm, wu;
      turns(b, kids, k, stride, concurrent, rounds, own, wm, wu);
      const std::string name = std::string(concurrent ? "all at once" : "in turns") +
                               ", 4 procs x " + std::to_string(k) +
                               (k == 1 ? " handle" : " per-layer handles");
      r.add("ctx", name + " (own calls)", own,
            {{"procs", 4}, {"handles", k}, {"concurrent", concurrent}});
      const LatencySummary m = summarize(wm), u = summarize(wu);
      turn_rows.push_back({{"case", name},
                           {"handles_per_proc", k},
                           {"concurrent", concurrent},
                           {"round_wall_per_handle_map_access_us", stats(wm)},
                           {"round_wall_per_handle_unmap_us", stats(wu)}});
      turn_table.add_row({name, fixed(m.mean), fixed(m.p50), fixed(u.mean), fixed(u.p50)});
    }
    kids.stop_all();
  }
}

void run_probe(const ProbeConfig& cfg) {
  if (!cfg.child.empty()) throw ExitStatus{run_child(cfg)};
  const double t_start = now_us();
  auto backend = open_backend(cfg);
  Backend& b = *backend;
  Report r;
  Json out = {{"bench", "vmm-probe"}, {"backend", b.describe()}, {"samples", cfg.samples}};
  Json first = Json::object(), coalesce = Json::array(), turn_rows = Json::array();
  TextTable coalesce_table({"contiguous handles", "map all (us)", "one set-access (us)",
                            "set-access per handle", "unmap each, total", "one unmap"});
  TextTable turn_table(
      {"4 processes", "round wall per handle: map+access mean", "p50", "unmap mean", "p50"});
  section_first_touch(b, cfg, r, first, false);
  section_reservation_size(b, cfg, r);
  section_reservations_alive(b, cfg, r);
  section_already_mapped(b, cfg, r);
  section_stride(b, cfg, r);
  section_coalesce(b, coalesce, coalesce_table);
  section_contexts(b, cfg, r, turn_rows, turn_table);
  section_first_touch(b, cfg, r, first, true);
  out["rows"] = r.rows;
  out["first_touch"] = first;
  out["coalesce"] = coalesce;
  out["turns"] = turn_rows;
  out["elapsed_s"] = (now_us() - t_start) / 1e6;
  if (cfg.json) {
    std::cout << out.dump(2) << "\n";
    return;
  }
  std::printf("=== VMM probe (per handle, us) ===\nBackend: %s\nSamples per row: %d\n\n",
              b.describe().c_str(), cfg.samples);
  std::printf("%s\n", r.table.render().c_str());
  std::printf("One set-access / unmap over N contiguous mapped handles:\n%s\n",
              coalesce_table.render().c_str());
  std::printf("Four processes on the device (this one and 3 children):\n%s\n",
              turn_table.render().c_str());
  std::printf("Elapsed: %.1f s\n", out["elapsed_s"].get<double>());
}

void register_bench_vmm_probe(CommandGroups& groups) {
  auto cfg = std::make_shared<ProbeConfig>();
  CLI::App* cmd = groups.bench.add_subcommand(
      "vmm-probe",
      "Per-handle map/set-access/unmap cost against reservation size and count, "
      "mapped neighbours, stride, coalescing, and other processes on the device");
  cmd->add_option("--backend", cfg->backend, "auto|host|cuda")->capture_default_str();
  cmd->add_option("--device", cfg->device, "CUDA device ordinal")->capture_default_str();
  cmd->add_option("--samples", cfg->samples, "handles timed per row")
      ->capture_default_str()
      ->check(integer_in(20, 100000));
  cmd->add_flag("--no-children", cfg->no_children,
                "skip the rows that need other processes on the device");
  cmd->add_flag("--json", cfg->json, "print one JSON object");
  cmd->add_option("--child", cfg->child)->group("");  // internal: a helper process
  cmd->add_option("--child-handles", cfg->child_handles)->group("");
  cmd->callback([cfg] { run_probe(*cfg); });
}

}  // namespace

KVPAGER_REGISTER_COMMAND(register_bench_vmm_probe);

}  // namespace kvpager::cli
