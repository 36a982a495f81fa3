#include "kvpager/common/env_number.hpp"

#include <charconv>
#include <string>

#include "kvpager/common/error.hpp"

namespace kvpager {

namespace {

std::string in_base(uint64_t n, int base) {
  char text[24];
  const auto end = std::to_chars(text, text + sizeof text, n, base).ptr;
  return (base == 8 && n != 0 ? "0" : "") + std::string(text, end);
}

}  // namespace

uint64_t parse_env_number(std::string_view name, std::string_view value, std::string_view what,
                          uint64_t low, uint64_t high, int base) {
  uint64_t n = 0;
  const char* end = value.data() + value.size();
  const auto [ptr, ec] = std::from_chars(value.data(), end, n, base);
  if (value.empty() || ec != std::errc{} || ptr != end || n < low || n > high) {
    std::string range;
    if (low != 0 || high != std::numeric_limits<uint64_t>::max()) {
      range = " (" + in_base(low, base) + " to " + in_base(high, base) + ")";
    }
    throw InvalidArgument(std::string(name) + "='" + std::string(value) + "' is not " +
                          std::string(what) + range);
  }
  return n;
}

}  // namespace kvpager
