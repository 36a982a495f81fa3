#pragma once
// Element types a KV tensor can be viewed as, and how each one is spelled for DLPack and numpy.
#include <cstdint>
#include <string>
#include <string_view>

#include "dlpack.h"

namespace kvpager::python {

struct DType {
  std::string name;     // canonical: "float16", "bfloat16", "float8_e4m3fn", ...
  uint32_t bytes = 0;   // size of one element
  DLDataType dlpack{};  // code, bits, lanes = 1
  std::string typestr;  // numpy array-interface type string; empty: numpy has no such type
};

// Looks a dtype up by its canonical name or a common alias ("fp16", "half", "bf16", "fp8",
// "fp8_e4m3", "fp8_e5m2", "float", "fp32"). Throws InvalidArgument listing the known names.
const DType& parse_dtype(std::string_view name);

// "float16, bfloat16, ..." for error messages and docs.
std::string known_dtypes();

}  // namespace kvpager::python
