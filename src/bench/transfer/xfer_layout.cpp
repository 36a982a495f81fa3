#include "kvpager/bench/transfer/xfer_layout.hpp"

#include <algorithm>
#include <cstring>

#include "kvpager/common/error.hpp"
#include "kvpager/common/units.hpp"

namespace kvpager::transfer {

namespace {

inline uint64_t mix(uint64_t x) {
  x ^= x >> 31;
  x *= 0x7FB5D329728EA185ull;
  x ^= x >> 27;
  x *= 0x81DADEF4BC2DD44Dull;
  x ^= x >> 33;
  return x;
}

// 8 pattern bytes for the aligned 8-byte word at `word_offset`.
inline uint64_t word(uint64_t seed, uint64_t word_offset) {
  return mix(seed * 0x9E3779B97F4A7C15ull + word_offset);
}

}  // namespace

std::vector<Flow> XferLayout::flows_of(uint32_t rank) const {
  std::vector<Flow> out;
  for (const auto& f : flows) {
    if (f.initiator == rank || f.target == rank) out.push_back(f);
  }
  return out;
}

XferLayout make_layout(const XferConfig& c) {
  XferLayout l;
  l.initiators = static_cast<uint32_t>(c.num_initiator_dev);
  l.targets = static_cast<uint32_t>(c.num_target_dev);
  if (c.scheme == "pairwise") {
    for (uint32_t r = 0; r < l.initiators; ++r) l.flows.push_back({r, l.initiators + r, 0, 0});
  } else if (c.scheme == "manytoone") {
    l.target_regions = l.initiators;
    for (uint32_t r = 0; r < l.initiators; ++r) l.flows.push_back({r, l.initiators, 0, r});
  } else if (c.scheme == "onetomany") {
    for (uint32_t t = 0; t < l.targets; ++t) l.flows.push_back({0, 1 + t, 0, 0});
  } else if (c.scheme == "tp") {
    l.initiator_regions = l.targets;
    for (uint32_t t = 0; t < l.targets; ++t) l.flows.push_back({0, 1 + t, t, 0});
  } else {
    throw InvalidArgument("--scheme " + c.scheme + ": unknown");
  }
  const uint32_t regions = std::max(l.initiator_regions, l.target_regions);
  const unsigned __int128 wanted =
      static_cast<unsigned __int128>(c.max_block_size) * c.max_batch_size;
  uint64_t region = c.total_buffer_size / regions;
  if (wanted < region) region = static_cast<uint64_t>(wanted);
  region = std::max(region, c.max_block_size);
  l.region_bytes = round_up(region, 4096);
  for (auto& f : l.flows) {
    f.initiator_base *= l.region_bytes;
    f.target_base *= l.region_bytes;
  }
  return l;
}

std::vector<uint64_t> sweep(uint64_t start, uint64_t max) {
  std::vector<uint64_t> out;
  for (uint64_t v = start; v < max; v *= 2) out.push_back(v);
  out.push_back(max);
  return out;
}

void fill_pattern(std::byte* data, uint64_t bytes, uint64_t offset, uint64_t seed) {
  for (uint64_t i = 0; i < bytes;) {
    const uint64_t pos = offset + i;
    const uint64_t w = word(seed, pos / 8);
    const uint64_t in_word = pos % 8;
    if (in_word == 0 && bytes - i >= 8) {
      std::memcpy(data + i, &w, 8);
      i += 8;
    } else {
      data[i] = static_cast<std::byte>(w >> (8 * in_word));
      ++i;
    }
  }
}

uint64_t count_mismatches(const std::byte* data, uint64_t bytes, uint64_t offset, uint64_t seed) {
  uint64_t bad = 0;
  for (uint64_t i = 0; i < bytes;) {
    const uint64_t pos = offset + i;
    const uint64_t w = word(seed, pos / 8);
    const uint64_t in_word = pos % 8;
    if (in_word == 0 && bytes - i >= 8) {
      uint64_t got;
      std::memcpy(&got, data + i, 8);
      if (got != w) {
        for (int b = 0; b < 8; ++b) bad += ((got ^ w) >> (8 * b) & 0xFF) != 0;
      }
      i += 8;
    } else {
      bad += data[i] != static_cast<std::byte>(w >> (8 * in_word));
      ++i;
    }
  }
  return bad;
}

uint64_t pattern_seed(uint32_t rank, uint32_t row) {
  // cppcheck-suppress shiftTooManyBits ; cppcheck 2.10 reads uint64_t{rank} as 32-bit
  return (uint64_t{rank} + 1) << 32 | (uint64_t{row} + 1);
}

}  // namespace kvpager::transfer
