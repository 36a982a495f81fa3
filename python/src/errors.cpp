#include "errors.hpp"

#include <string>

#include "kvpager/common/error.hpp"

namespace py = pybind11;

namespace kvpager::python {

namespace {

// Owned for the life of the interpreter: the module keeps a reference too.
struct Types {
  PyObject* error = nullptr;
  PyObject* invalid = nullptr;
  PyObject* oom = nullptr;
  PyObject* state = nullptr;
  PyObject* timeout = nullptr;
  PyObject* driver = nullptr;
};
Types g_types;

PyObject* make_type(py::module_& m, const char* name, const char* doc, py::tuple bases) {
  const std::string qualified = std::string("kvpager.") + name;
  PyObject* type = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, bases.ptr(), nullptr);
  if (type == nullptr) throw py::error_already_set();
  m.add_object(name, py::reinterpret_borrow<py::object>(type));
  return type;
}

void translate(std::exception_ptr p) {
  try {
    if (p) std::rethrow_exception(p);
  } catch (const InvalidArgument& e) {
    PyErr_SetString(g_types.invalid, e.what());
  } catch (const OutOfMemory& e) {
    PyErr_SetString(g_types.oom, e.what());
  } catch (const StateError& e) {
    PyErr_SetString(g_types.state, e.what());
  } catch (const Timeout& e) {
    PyErr_SetString(g_types.timeout, e.what());
  } catch (const DriverError& e) {
    py::object exc = py::reinterpret_borrow<py::object>(g_types.driver)(e.what());
    exc.attr("call") = e.call();
    exc.attr("result") = e.result();
    PyErr_SetObject(g_types.driver, exc.ptr());
  } catch (const Error& e) {
    PyErr_SetString(g_types.error, e.what());
  }
}

}  // namespace

void register_errors(py::module_& m) {
  auto base = [](PyObject* t) { return py::reinterpret_borrow<py::object>(t); };
  g_types.error =
      make_type(m, "Error", "Every kvpager failure.", py::make_tuple(base(PyExc_RuntimeError)));
  g_types.invalid = make_type(m, "InvalidArgument",
                              "Bad input (shape, dtype, size, unknown id, double free); the "
                              "operation changed nothing.",
                              py::make_tuple(base(g_types.error), base(PyExc_ValueError)));
  g_types.oom = make_type(m, "OutOfMemory",
                          "A limit, the budget or the device is exhausted; the operation changed "
                          "nothing. Free blocks, trim, raise the limit or wait.",
                          py::make_tuple(base(g_types.error), base(PyExc_MemoryError)));
  g_types.state = make_type(m, "StateError",
                            "The object is in a state that forbids the call (closed, or a "
                            "background thread recorded a failure).",
                            py::make_tuple(base(g_types.error)));
  g_types.timeout = make_type(m, "Timeout", "A wait ran past its deadline.",
                              py::make_tuple(base(g_types.error), base(PyExc_TimeoutError)));
  g_types.driver =
      make_type(m, "DriverError", "A driver or system call failed; .call and .result name it.",
                py::make_tuple(base(g_types.error)));
  py::register_exception_translator(&translate);
}

}  // namespace kvpager::python
