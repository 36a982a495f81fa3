#pragma once
// A run of consecutive block ids: [first, first + count).
#include <cstdint>

namespace kvpager::kv {

struct BlockRange {
  int32_t first = 0;
  int32_t count = 0;
};

}  // namespace kvpager::kv
