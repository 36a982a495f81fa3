#pragma once
// POSIX backend (and the stand-in for GDS where cuFile is absent): blocks move between a host
// buffer and a file with io_uring (liburing), O_DIRECT when --storage_enable_direct. WRITE
// writes memory to the file, READ reads the file into memory. The file is --gds_filepath (a
// file, or a folder to create a temporary file in) or a temporary file in $TMPDIR; a
// temporary file is unlinked as soon as it is open (only the fd holds it), so a signal or a
// crash leaves nothing behind. Owns the fd, the buffer and each thread's
// ring.
#include <memory>
#include <string>

#include "kvpager/bench/transfer/segment.hpp"
#include "kvpager/bench/transfer/xfer_config.hpp"
#include "kvpager/bench/transfer/xfer_layout.hpp"

namespace kvpager::transfer {

// Throws InvalidArgument for a layout that needs more than one target or for blocks that
// O_DIRECT cannot move (not multiples of 4096), DriverError naming the file for IO failures.
std::unique_ptr<LocalEngine> make_posix_engine(const XferConfig& config, const XferLayout& layout);

}  // namespace kvpager::transfer
