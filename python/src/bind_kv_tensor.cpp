// Python face of KvTensor: the DLPack protocol plus numpy's and CUDA's array interfaces.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>

#include "bindings.hpp"
#include "dlpack_capsule.hpp"
#include "kv_tensor.hpp"
#include "kvpager/common/error.hpp"

namespace py = pybind11;

namespace kvpager::python {

namespace {

py::tuple as_tuple(const std::vector<int64_t>& v) {
  py::tuple t(v.size());
  for (size_t i = 0; i < v.size(); ++i) t[i] = v[i];
  return t;
}

py::tuple byte_strides(const KvTensor& t) {
  std::vector<int64_t> s = t.strides();
  for (int64_t& x : s) x *= t.dtype().bytes;
  return as_tuple(s);
}

// The consumer passes its stream so the producer can order pending writes before it. kvpager
// never writes into KV memory itself after construction (the zero page is filled and synchronised
// then), so there is nothing to order and every stream value is accepted.
py::object dlpack(const KvTensor& t, const py::object& stream, const py::object& max_version,
                  const py::object& dl_device, const py::object& copy) {
  (void)stream;
  if (!copy.is_none() && copy.cast<bool>()) {
    throw py::buffer_error("kvpager exports views of its KV memory and never copies (copy=True)");
  }
  if (!dl_device.is_none()) {
    auto wanted = dl_device.cast<std::pair<int, int>>();
    if (wanted.first != t.device().device_type || wanted.second != t.device().device_id) {
      throw py::buffer_error("kvpager tensor lives on " + t.device_name() +
                             "; it cannot be exported to another device");
    }
  }
  bool versioned = false;
  uint32_t minor = kDlpackMinorVersion;
  if (!max_version.is_none()) {
    auto v = max_version.cast<std::pair<int, int>>();
    versioned = v.first >= 1;
    if (v.first == 1) minor = static_cast<uint32_t>(std::clamp(v.second, 0, int(minor)));
  }
  return py::reinterpret_steal<py::object>(make_dlpack_capsule(t, versioned, minor));
}

py::dict array_interface(const KvTensor& t, bool cuda) {
  const bool on_cuda = t.device().device_type == kDLCUDA;
  if (cuda != on_cuda) {
    throw py::attribute_error(std::string("kvpager tensor on ") + t.device_name() + " has no " +
                              (cuda ? "__cuda_array_interface__" : "__array_interface__"));
  }
  if (t.dtype().typestr.empty()) {
    throw py::type_error("dtype " + t.dtype().name +
                         " has no numpy equivalent; use DLPack (torch.from_dlpack) instead");
  }
  py::dict d;
  d["shape"] = as_tuple(t.shape());
  d["typestr"] = t.dtype().typestr;
  d["data"] = py::make_tuple(static_cast<uintptr_t>(t.data()), false);
  d["strides"] = byte_strides(t);
  d["version"] = 3;
  return d;
}

}  // namespace

void bind_kv_tensor(py::module_& m) {
  py::class_<KvTensor>(m, "KvTensor", R"doc(
A typed, strided view of a KV cache's virtual memory. Zero-copy into any framework:
torch.from_dlpack(t), cupy.from_dlpack(t), numpy.from_dlpack(t) (host backend; read-only on
numpy < 2.1, numpy's rule) or numpy.asarray(t) (host backend, writable, through
__array_interface__). Strides are in elements.

Lifetime: the view, and every tensor made from it, keeps the KV space alive.
Only blocks in use (and the null block 0) are backed by memory; touching any other block
faults unless the cache was built with zero_fill=True.)doc")
      .def_property_readonly("shape", [](const KvTensor& t) { return as_tuple(t.shape()); })
      .def_property_readonly(
          "strides", [](const KvTensor& t) { return as_tuple(t.strides()); },
          "Strides in elements.")
      .def_property_readonly("dtype", [](const KvTensor& t) { return t.dtype().name; })
      .def_property_readonly("itemsize", [](const KvTensor& t) { return t.dtype().bytes; })
      .def_property_readonly("device", &KvTensor::device_name, "'cpu' or 'cuda:N'.")
      .def_property_readonly("data_ptr", &KvTensor::data, "Address of element 0.")
      .def_property_readonly("ndim", [](const KvTensor& t) { return t.shape().size(); })
      .def("__dlpack__", &dlpack, py::kw_only(), py::arg("stream") = py::none(),
           py::arg("max_version") = py::none(), py::arg("dl_device") = py::none(),
           py::arg("copy") = py::none(),
           "A DLPack capsule over this view (versioned when max_version >= (1, 0)). Never copies.")
      .def(
          "__dlpack_device__",
          [](const KvTensor& t) {
            return py::make_tuple(static_cast<int>(t.device().device_type), t.device().device_id);
          },
          "(device_type, device_id): (1, 0) for the host backend, (2, N) for cuda:N.")
      .def(
          "with_dtype",
          [](const KvTensor& t, const std::string& dtype) {
            const DType& d = parse_dtype(dtype);
            if (d.bytes != t.dtype().bytes) {
              throw InvalidArgument("with_dtype: " + d.name + " elements are " +
                                    std::to_string(d.bytes) + " bytes, " + t.dtype().name +
                                    " elements " + std::to_string(t.dtype().bytes));
            }
            return t.retyped(d);
          },
          py::arg("dtype"),
          "The same view read as another dtype of the same element size (e.g. float8 as "
          "uint8, for frameworks whose DLPack import lacks float8).")
      .def_property_readonly("__array_interface__",
                             [](const KvTensor& t) { return array_interface(t, false); })
      .def_property_readonly("__cuda_array_interface__",
                             [](const KvTensor& t) { return array_interface(t, true); })
      .def("__repr__", [](const KvTensor& t) {
        std::string shape;
        for (int64_t s : t.shape()) shape += (shape.empty() ? "" : ", ") + std::to_string(s);
        std::string strides;
        for (int64_t s : t.strides()) strides += (strides.empty() ? "" : ", ") + std::to_string(s);
        return "KvTensor(shape=(" + shape + "), strides=(" + strides +
               "), dtype=" + t.dtype().name + ", device=" + t.device_name() + ")";
      });
}

}  // namespace kvpager::python
