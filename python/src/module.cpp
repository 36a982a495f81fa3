// The kvpager._kvpager extension module. The Python package kvpager wraps it.
#include <pybind11/pybind11.h>

#include "bindings.hpp"
#include "dtype.hpp"
#include "errors.hpp"

namespace py = pybind11;

PYBIND11_MODULE(_kvpager, m) {
  m.doc() = "kvpager native module: the elastic KV cache and its zero-copy tensor views.";
  m.attr("__version__") = KVPAGER_VERSION;
  kvpager::python::register_errors(m);
  kvpager::python::bind_kv_tensor(m);
  kvpager::python::bind_kv_cache(m);
  kvpager::python::bind_registry(m);
  kvpager::python::bind_tp_rank_server(m);
  m.def("known_dtypes", &kvpager::python::known_dtypes, "The dtype names KV tensors accept.");
  m.def(
      "dtype_info",
      [](const std::string& name) {
        const kvpager::python::DType& d = kvpager::python::parse_dtype(name);
        return py::make_tuple(d.name, d.bytes);
      },
      py::arg("name"), "(canonical name, element bytes) of a dtype name or alias.");
  m.attr("DLPACK_VERSION") = py::make_tuple(kDlpackMajorVersion, kDlpackMinorVersion);
}
