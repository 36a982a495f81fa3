#include "kvpager/common/units.hpp"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <string>

#include "kvpager/common/error.hpp"

namespace kvpager {

uint64_t parse_size(std::string_view text) {
  const std::string input(text);
  auto fail = [&](const char* why) -> uint64_t {
    throw InvalidArgument("invalid size '" + input + "': " + why +
                          " (examples: 4096, 512M, 2GiB, 1.5G)");
  };
  size_t pos = 0;
  while (pos < text.size() &&
         (std::isdigit(static_cast<unsigned char>(text[pos])) || text[pos] == '.')) {
    ++pos;
  }
  if (pos == 0) return fail(text.empty() ? "empty" : "must start with a non-negative number");
  const std::string number(text.substr(0, pos));
  if (number.find('.') != number.rfind('.')) return fail("malformed number");
  std::string suffix(text.substr(pos));
  for (auto& c : suffix) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  uint64_t multiplier = 1;
  if (!suffix.empty()) {
    const char unit = suffix[0];
    std::string rest = suffix.substr(1);
    switch (unit) {
      case 'B':
        multiplier = 1;
        rest = suffix.substr(1);
        if (!rest.empty()) return fail("unknown suffix");
        break;
      case 'K':
        multiplier = KiB;
        break;
      case 'M':
        multiplier = MiB;
        break;
      case 'G':
        multiplier = GiB;
        break;
      case 'T':
        multiplier = GiB * 1024;
        break;
      default:
        return fail("unknown suffix");
    }
    if (unit != 'B' && !(rest.empty() || rest == "B" || rest == "I" || rest == "IB")) {
      return fail("unknown suffix");
    }
  }
  const long double value = std::stold(number) * static_cast<long double>(multiplier);
  if (!std::isfinite(static_cast<double>(value)) || value > 1.8e19L) return fail("too large");
  return static_cast<uint64_t>(std::llround(value));
}

std::string format_size(uint64_t bytes) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  if (u == 0) {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(buf, sizeof buf, "%.2f %s", v, units[u]);
  }
  return buf;
}

}  // namespace kvpager
