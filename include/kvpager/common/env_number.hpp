#pragma once
// The one parser of numeric KVPAGER_* environment variables: every layer's *_from_env reads its
// numbers through it, so KVPAGER_DEVICE=1x, =-1, = 1 or =99999999999999999999 are refused the
// same way everywhere instead of being read as 1, a huge number or 0.
// A number is digits only in `base` (10, or 8 for file modes): no sign, space, unit or trailing
// text, no overflow, and within [low, high]. Anything else throws InvalidArgument naming the
// variable, its value and what was expected, e.g.
//   KVPAGER_DEVICE='1x' is not a device number (0 to 2147483647)
// Sizes with units (KVPAGER_LIMIT=8G) go through parse_size (units.hpp) instead.
#include <cstdint>
#include <limits>
#include <string_view>

namespace kvpager {

uint64_t parse_env_number(std::string_view name, std::string_view value, std::string_view what,
                          uint64_t low = 0, uint64_t high = std::numeric_limits<uint64_t>::max(),
                          int base = 10);

}  // namespace kvpager
