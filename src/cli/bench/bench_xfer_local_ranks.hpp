#pragma once
// Runs a transfer benchmark with every rank on this host: rank 0 in this process, ranks
// 1..N-1 as child processes (`kvpager bench xfer ... --rank k`), all in a private etcd group.
// Used by `bench xfer --spawn_local` and by `kvbench profile` when nixlbench is absent.
// Children are owned (RAII): on an error they are terminated and reaped.
#include <iosfwd>

#include "kvpager/bench/transfer/xfer_config.hpp"
#include "kvpager/bench/transfer/xfer_report.hpp"

namespace kvpager::cli {

// Throws like run_xfer_bench; a child that fails makes the run fail naming its rank.
transfer::XferReport run_with_local_ranks(transfer::XferConfig config, std::ostream& table);

}  // namespace kvpager::cli
