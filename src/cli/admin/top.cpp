// kvpager top: full-screen live view of the registry (ncurses). One bar per device budget and
// per instance (used / mapped / limit, then its guarantee), sorted; keys: q quit, + faster,
// - slower, s sort.
// Fits an 80x24 terminal; wider terminals get wider bars.
#include <ncurses.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "admin/registry_view.hpp"
#include "command_registry.hpp"
#include "kvpager/common/error.hpp"
#include "kvpager/limits/segment_format.hpp"

namespace kvpager::cli {
namespace {

struct TopOptions {
  double interval_s = 1.0;
  bool json = false;  // one snapshot as JSON (what the screen shows), no terminal needed
};

enum class SortKey { kMapped, kUsed, kLimit, kName };
constexpr std::array<const char*, 4> kSortNames = {"mapped", "used", "limit", "name"};
constexpr std::array<double, 7> kIntervals = {0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0};

// Ends curses mode on every way out (exceptions included).
class CursesSession {
 public:
  CursesSession() {
    screen_ = newterm(nullptr, stdout, stdin);
    if (!screen_) {
      const char* term = std::getenv("TERM");
      throw StateError(std::string("top: cannot drive terminal TERM=") + (term ? term : "(unset)") +
                       "; use `kvpager watch` instead");
    }
    set_term(screen_);
    cbreak();
    noecho();
    keypad(stdscr, TRUE);
    curs_set(0);
  }
  ~CursesSession() {
    endwin();
    delscreen(screen_);
  }
  CursesSession(const CursesSession&) = delete;
  CursesSession& operator=(const CursesSession&) = delete;

 private:
  SCREEN* screen_ = nullptr;
};

// "[===+++.....]": '=' used, '+' mapped but not in use, '.' the rest up to `scale`.
std::string bar(uint64_t used, uint64_t mapped, uint64_t scale, int width) {
  if (width < 3) return "";
  const int inner = width - 2;
  auto cells = [&](uint64_t v) {
    if (scale == 0) return 0;
    const double f = std::min(1.0, static_cast<double>(v) / static_cast<double>(scale));
    return static_cast<int>(std::lround(f * inner));
  };
  const int u = cells(used);
  const int m = std::max(u, cells(mapped));
  return "[" + std::string(u, '=') + std::string(m - u, '+') + std::string(inner - m, '.') + "]";
}

void put(int row, const std::string& text, attr_t attr = A_NORMAL) {
  if (row >= LINES) return;
  attron(attr);
  mvaddnstr(row, 0, text.c_str(), COLS);
  attroff(attr);
}

void sort_instances(std::vector<limits::InstanceStatus>& v, SortKey key) {
  std::stable_sort(v.begin(), v.end(), [key](const auto& a, const auto& b) {
    switch (key) {
      case SortKey::kMapped:
        return a.record.mapped_bytes > b.record.mapped_bytes;
      case SortKey::kUsed:
        return a.record.used_bytes > b.record.used_bytes;
      case SortKey::kLimit:
        return a.record.limit_bytes > b.record.limit_bytes;
      case SortKey::kName:
        return a.record.name < b.record.name;
    }
    return false;
  });
}

void draw(const limits::Registry& registry, limits::RegistrySnapshot snap, SortKey key,
          double interval_s) {
  erase();
  char line[512];
  std::snprintf(line, sizeof line,
                "kvpager top  %s*  every %.1fs  sort:%s   q quit +/- rate s sort",
                registry.config().prefix.c_str(), interval_s, kSortNames[static_cast<int>(key)]);
  put(0, std::string(line) + std::string(std::max(0, COLS - static_cast<int>(strlen(line))), ' '),
      A_REVERSE);
  int row = 2;
  // Device budgets: "host0  [bar] 1.5G/2.0G  2 live"
  for (const auto& d : snap.devices) {
    const auto& r = d.record;
    std::snprintf(line, sizeof line, " %s/%s %u live", short_size(r.charged_bytes).c_str(),
                  short_size(r.budget_bytes).c_str(), d.live_members);
    const std::string tail = line;
    const int width = std::max(10, COLS - 9 - static_cast<int>(tail.size()) - 1);
    std::snprintf(line, sizeof line, "%-8.8s %s%s", r.device.c_str(),
                  bar(r.charged_bytes, r.charged_bytes, r.budget_bytes, width).c_str(),
                  tail.c_str());
    put(row++, line, A_BOLD);
  }
  if (snap.devices.empty()) put(row++, "no devices registered");
  ++row;
  // Instances: NAME PID [bar] USED MAPPED LIMIT GUAR STATE  (80 columns: bar of 22, the legend)
  const int bar_width = std::max(10, COLS - 58);
  std::snprintf(line, sizeof line, "%-14s %7s %-*s %6s %6s %6s %6s %-5s", "NAME", "PID", bar_width,
                "USED=  MAPPED+  LIMIT.", "USED", "MAPPED", "LIMIT", "GUAR", "STATE");
  put(row++, line, A_UNDERLINE);
  sort_instances(snap.instances, key);
  for (const auto& s : snap.instances) {
    if (row >= LINES - 1) break;
    const auto& r = s.record;
    uint64_t scale = r.limit_bytes;
    if (scale == limits::format::kUnlimited) {
      const limits::DeviceStatus* d = snap.find_device(r.device);
      scale = d ? d->record.budget_bytes : r.mapped_bytes;
    }
    const uint64_t guarantee = guarantee_of(snap, r);
    std::snprintf(line, sizeof line, "%-14.14s %7d %s %6s %6s %6s %6s %-5s", r.name.c_str(),
                  r.owner.pid, bar(r.used_bytes, r.mapped_bytes, scale, bar_width).c_str(),
                  short_size(r.used_bytes).c_str(), short_size(r.mapped_bytes).c_str(),
                  short_size(r.limit_bytes).c_str(),
                  guarantee == 0 ? "-" : short_size(guarantee).c_str(), instance_state(s).c_str());
    put(row++, line, s.alive ? A_NORMAL : A_DIM);
  }
  if (snap.instances.empty()) put(row++, "no instances registered");
  if (!snap.skipped.empty()) {
    std::snprintf(line, sizeof line, "%zu segment(s) skipped (`kvpager list` says why)",
                  snap.skipped.size());
    put(LINES - 1, line, A_DIM);
  }
  refresh();
}

void run_top(const TopOptions& o) {
  if (!(o.interval_s >= 0.1 && o.interval_s <= 10)) {
    throw InvalidArgument("top: --interval must be between 0.1 and 10 seconds");
  }
  const limits::Registry registry = registry_from_env();
  if (o.json) {
    const limits::RegistrySnapshot snap = registry.scan();
    report_skipped(snap);
    std::printf("%s\n", registry_json(snap).dump(2).c_str());
    return;
  }
  if (!::isatty(STDIN_FILENO) || !::isatty(STDOUT_FILENO)) {
    throw StateError("top needs a terminal; use `kvpager watch` or `kvpager list --json`");
  }
  size_t rate = 0;
  while (rate + 1 < kIntervals.size() && kIntervals[rate] < o.interval_s) ++rate;
  double interval = o.interval_s;
  SortKey key = SortKey::kMapped;
  CursesSession session;
  for (;;) {
    draw(registry, registry.scan(), key, interval);
    timeout(static_cast<int>(interval * 1000));
    const int ch = getch();
    if (ch == 'q' || ch == 'Q') break;
    // The terminal went away (its emulator or tmux session closed): getch() fails at once
    // from then on, so stop instead of redrawing into nothing in a busy loop.
    if (ch == ERR && !::isatty(STDIN_FILENO)) break;
    if (ch == '+' || ch == '=') {
      if (rate > 0) --rate;
      interval = kIntervals[rate];
    } else if (ch == '-' || ch == '_') {
      if (rate + 1 < kIntervals.size()) ++rate;
      interval = kIntervals[rate];
    } else if (ch == 's' || ch == 'S') {
      key = static_cast<SortKey>((static_cast<int>(key) + 1) % kSortNames.size());
    }
  }
}

void register_top(CommandGroups& groups) {
  auto o = std::make_shared<TopOptions>();
  CLI::App* cmd = groups.root.add_subcommand(
      "top", "Full-screen live view: device budgets and per-instance used/mapped/limit bars");
  cmd->add_option("-n,--interval", o->interval_s, "Seconds between refreshes (default 1)");
  cmd->add_flag("--json", o->json, "Print one snapshot as JSON and exit");
  cmd->callback([o] { run_top(*o); });
}

}  // namespace
KVPAGER_REGISTER_COMMAND(register_top);
}  // namespace kvpager::cli
