#pragma once
// `kvpager bench xfer`: runs nixlbench's sweep (block sizes x batch sizes, warm-up, timed
// iterations) with kvpager's engines and prints nixlbench's table as rows complete.
//   UCX, UCX_MO  one rank of a multi-process run (initiators put/get into targets' registered
//                memory); ranks meet through etcd; rank 0 prints the table
//   POSIX, GDS   one process: host buffer <-> file through io_uring (GDS: the POSIX stand-in)
//   CUDA         one process: copies between DRAM (pinned) and VRAM, VRAM and VRAM by the
//                --copy_engine (per-block, batch, kernel); with cuda_ipc, a second rank exports
//                VMM memory the initiator imports and copies to
// With check_consistency every byte of every row is verified; mismatches fail the run after
// the table is printed. Not reentrant within a process only in the sense that each call owns
// its own resources; safe to call from one thread at a time.
#include <iosfwd>

#include "kvpager/bench/transfer/xfer_config.hpp"
#include "kvpager/bench/transfer/xfer_report.hpp"

namespace kvpager::transfer {

// Validates `config`, runs this process's part and returns the rows this process measured
// (rank 0 / single-process: the table; other ranks: no rows). Prints the table to `table`.
// Throws InvalidArgument for bad flags, Error for runtime failures (unreachable etcd, a peer
// that never came, a failed consistency check), DriverError for failed system/driver calls.
XferReport run_xfer_bench(const XferConfig& config, std::ostream& table);

}  // namespace kvpager::transfer
