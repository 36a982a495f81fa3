#pragma once
// One function per bound class; module.cpp calls them in dependency order.
#include <pybind11/pybind11.h>

namespace kvpager::python {

void bind_kv_tensor(pybind11::module_& m);
void bind_kv_cache(pybind11::module_& m);
void bind_registry(pybind11::module_& m);
void bind_tp_rank_server(pybind11::module_& m);

}  // namespace kvpager::python
