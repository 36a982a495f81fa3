#include "dtype.hpp"

#include <array>
#include <utility>

#include "kvpager/common/error.hpp"

namespace kvpager::python {

namespace {

const std::array<DType, 7>& table() {
  static const std::array<DType, 7> t = {{
      {"float16", 2, {kDLFloat, 16, 1}, "<f2"},
      {"bfloat16", 2, {kDLBfloat, 16, 1}, ""},
      {"float32", 4, {kDLFloat, 32, 1}, "<f4"},
      {"float8_e4m3fn", 1, {kDLFloat8_e4m3fn, 8, 1}, ""},
      {"float8_e5m2", 1, {kDLFloat8_e5m2, 8, 1}, ""},
      {"int8", 1, {kDLInt, 8, 1}, "|i1"},
      {"uint8", 1, {kDLUInt, 8, 1}, "|u1"},
  }};
  return t;
}

constexpr std::array<std::pair<std::string_view, std::string_view>, 9> kAliases = {{
    {"fp16", "float16"},
    {"half", "float16"},
    {"bf16", "bfloat16"},
    {"fp32", "float32"},
    {"float", "float32"},
    {"fp8", "float8_e4m3fn"},
    {"fp8_e4m3", "float8_e4m3fn"},
    {"fp8_e5m2", "float8_e5m2"},
    {"float8_e4m3", "float8_e4m3fn"},
}};

}  // namespace

const DType& parse_dtype(std::string_view name) {
  for (const auto& [alias, canonical] : kAliases) {
    if (name == alias) name = canonical;
  }
  for (const DType& d : table()) {
    if (d.name == name) return d;
  }
  throw InvalidArgument("unknown dtype '" + std::string(name) + "' (known: " + known_dtypes() +
                        ")");
}

std::string known_dtypes() {
  std::string s;
  for (const DType& d : table()) {
    if (!s.empty()) s += ", ";
    s += d.name;
  }
  return s;
}

}  // namespace kvpager::python
