#include "dlpack_capsule.hpp"

#include <pybind11/pybind11.h>

#include <memory>
#include <type_traits>
#include <vector>

namespace kvpager::python {

namespace {

constexpr const char* kLegacyName = "dltensor";
constexpr const char* kVersionedName = "dltensor_versioned";

// Everything a capsule owns; the managed tensor's manager_ctx points back here.
template <class Managed>
struct Export {
  Managed managed{};
  std::shared_ptr<const void> owner;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;

  static void deleter(Managed* self) { delete static_cast<Export*>(self->manager_ctx); }
};

template <class Managed>
void capsule_destructor(PyObject* capsule) {
  // cppcheck-suppress assignBoolToPointer ; cppcheck 2.10 misreads the conditional of two names
  constexpr const char* name =
      std::is_same_v<Managed, DLManagedTensor> ? kLegacyName : kVersionedName;
  // A consumed capsule has been renamed; its consumer owns the tensor and calls the deleter.
  if (!PyCapsule_IsValid(capsule, name)) return;
  auto* managed = static_cast<Managed*>(PyCapsule_GetPointer(capsule, name));
  if (managed != nullptr && managed->deleter != nullptr) managed->deleter(managed);
}

template <class Managed>
PyObject* export_as(const KvTensor& t, const char* name, DLPackVersion version) {
  auto e = std::make_unique<Export<Managed>>();
  e->owner = t.owner();
  e->shape = t.shape();
  e->strides = t.strides();
  DLTensor& dl = e->managed.dl_tensor;
  dl.data = reinterpret_cast<void*>(t.data());
  dl.device = t.device();
  dl.ndim = static_cast<int32_t>(e->shape.size());
  dl.dtype = t.dtype().dlpack;
  dl.shape = e->shape.data();
  dl.strides = e->strides.data();
  dl.byte_offset = 0;
  e->managed.manager_ctx = e.get();
  e->managed.deleter = &Export<Managed>::deleter;
  if constexpr (std::is_same_v<Managed, DLManagedTensorVersioned>) {
    e->managed.version = version;
    e->managed.flags = 0;
  }
  PyObject* capsule = PyCapsule_New(&e->managed, name, &capsule_destructor<Managed>);
  if (capsule == nullptr) throw pybind11::error_already_set();
  e.release();  // owned by the capsule (or, once consumed, by its consumer)
  return capsule;
}

}  // namespace

PyObject* make_dlpack_capsule(const KvTensor& tensor, bool versioned, uint32_t minor) {
  if (versioned) {
    return export_as<DLManagedTensorVersioned>(tensor, kVersionedName,
                                               DLPackVersion{kDlpackMajorVersion, minor});
  }
  return export_as<DLManagedTensor>(tensor, kLegacyName, DLPackVersion{0, 0});
}

}  // namespace kvpager::python
