#pragma once
// UCX engine (internal): one rank of a multi-process UCX run. See xfer_bench.hpp.
#include <iosfwd>

#include "kvpager/bench/transfer/xfer_config.hpp"
#include "kvpager/bench/transfer/xfer_layout.hpp"
#include "kvpager/bench/transfer/xfer_report.hpp"

namespace kvpager::transfer::detail {

XferReport run_ucx_rank(const XferConfig& config, const XferLayout& layout, std::ostream& table);

}  // namespace kvpager::transfer::detail
