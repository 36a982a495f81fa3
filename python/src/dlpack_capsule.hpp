#pragma once
// Exports a KvTensor as a DLPack PyCapsule (the object __dlpack__ returns).
//
// Protocol: the capsule is named "dltensor" (or "dltensor_versioned"). A consumer that takes
// the tensor renames it "used_dltensor" (/"used_dltensor_versioned") and later calls the
// deleter itself; a capsule that was never consumed runs the deleter from its own destructor.
// The deleter frees the shape/strides arrays and drops the capsule's reference on the KV cache,
// touches no Python object and may run on any thread, with or without the GIL.
// No copy is ever made: the DLTensor points at the KV cache's memory (flags = 0: writable).
#include <Python.h>

#include <cstdint>

#include "kv_tensor.hpp"

namespace kvpager::python {

// New reference to a capsule. `versioned` selects DLManagedTensorVersioned (reporting DLPack
// version 1.`minor`); otherwise the legacy DLManagedTensor. Throws std::bad_alloc or
// pybind11::error_already_set; nothing leaks on failure.
PyObject* make_dlpack_capsule(const KvTensor& tensor, bool versioned, uint32_t minor);

}  // namespace kvpager::python
