#pragma once
// kvpager's C++ errors as Python exceptions, carrying the C++ message unchanged:
//
//   kvpager.Error            (RuntimeError)                every kvpager failure
//   kvpager.InvalidArgument  (kvpager.Error, ValueError)   bad shape, dtype, size, unknown id,
//                                                          double free; nothing changed
//   kvpager.OutOfMemory      (kvpager.Error, MemoryError)  limit, budget or device exhausted;
//                                                          nothing changed: free, trim or wait
//   kvpager.StateError       (kvpager.Error)               closed cache, broken background thread
//   kvpager.Timeout          (kvpager.Error, TimeoutError)
//   kvpager.DriverError      (kvpager.Error)               .call and .result name the failure
//
// OutOfMemory derives from MemoryError so engines that already catch MemoryError (or
// torch.cuda.OutOfMemoryError's RuntimeError base, through kvpager.Error) handle it.
#include <pybind11/pybind11.h>

namespace kvpager::python {

// Creates the exception classes in `m` and installs the C++ -> Python translator.
void register_errors(pybind11::module_& m);

}  // namespace kvpager::python
