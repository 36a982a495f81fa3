#pragma once
// Byte sizes: parsing of human input ("512M", "2GiB", "1.5G", "4096") and formatting.
#include <cstdint>
#include <string>
#include <string_view>

namespace kvpager {

constexpr uint64_t KiB = 1ull << 10;
constexpr uint64_t MiB = 1ull << 20;
constexpr uint64_t GiB = 1ull << 30;

// Parses a byte size. Suffixes K/M/G/T (optionally followed by "i", "B" or "iB") are binary
// multiples (1M = 1 MiB, as nvidia-smi and kvcached use). Throws InvalidArgument naming the
// input for anything else (negative, empty, unknown suffix, overflow).
uint64_t parse_size(std::string_view text);

// "1.50 GiB", "512.00 MiB", "4.00 KiB", "12 B".
std::string format_size(uint64_t bytes);

constexpr uint64_t round_up(uint64_t value, uint64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

}  // namespace kvpager
