// Python face of TpRankServerHandle: kvpager._kvpager.TpRankServer (kvpager.TpRankServer
// builds on it).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "tp_rank_server_handle.hpp"

namespace py = pybind11;

namespace kvpager::python {

namespace {

std::vector<PageId> to_pages(const std::vector<uint32_t>& ids) {
  std::vector<PageId> out;
  out.reserve(ids.size());
  for (uint32_t id : ids) out.emplace_back(id);
  return out;
}

std::vector<uint32_t> from_pages(const std::vector<PageId>& pages) {
  std::vector<uint32_t> out;
  out.reserve(pages.size());
  for (PageId p : pages) out.push_back(p.value);
  return out;
}

const char* phase_name(tp::RankServer::Phase phase) {
  switch (phase) {
    case tp::RankServer::Phase::kListening:
      return "listening";
    case tp::RankServer::Phase::kServing:
      return "serving";
    case tp::RankServer::Phase::kFinished:
      return "finished";
  }
  return "?";
}

}  // namespace

void bind_tp_rank_server(py::module_& m) {
  py::class_<TpRankServerHandle>(m, "TpRankServer", R"doc(
One tensor-parallel rank's KV tensors in this process, whose pages a scheduler-side KvCache
(tp_token, tp_size) in another process maps and unmaps. A thread serves the channel
'kvpager-tp/<token>/<rank>' (abstract AF_UNIX socket, same uid only) for one scheduler session;
when it ends, every page is unmapped. Thread-safe; calls release the GIL.)doc")
      .def(py::init([](uint32_t num_layers, uint32_t kv_heads, uint32_t head_dim, std::string dtype,
                       uint32_t block_size, uint64_t num_blocks, std::string kind,
                       std::optional<std::string> layout, std::optional<uint64_t> handle_bytes,
                       std::optional<std::string> backend, std::optional<int> device,
                       std::optional<uintptr_t> stream, std::string token, uint32_t rank) {
             TpRankServerOptions o;
             static_cast<KvShape&>(o) =
                 KvShape{num_layers,   kv_heads,           head_dim,        std::move(dtype),
                         block_size,   num_blocks,         std::move(kind), std::move(layout),
                         handle_bytes, std::move(backend), device,          stream};
             o.token = std::move(token);
             o.rank = rank;
             py::gil_scoped_release release;
             return std::make_unique<TpRankServerHandle>(o);
           }),
           py::kw_only(), py::arg("num_layers"), py::arg("kv_heads"), py::arg("head_dim"),
           py::arg("dtype") = "float16", py::arg("block_size") = 16, py::arg("num_blocks"),
           py::arg("kind") = "kv", py::arg("layout") = py::none(),
           py::arg("handle_bytes") = py::none(), py::arg("backend") = py::none(),
           py::arg("device") = py::none(), py::arg("stream") = py::none(), py::arg("token"),
           py::arg("rank"))
      .def(
          "pages_of_blocks",
          [](const TpRankServerHandle& h, uint64_t first, uint64_t count) {
            return from_pages(h.pages_of_blocks(first, count));
          },
          py::arg("first"), py::arg("count"),
          "The page ids holding any byte of blocks [first, first + count).")
      .def(
          "map_local",
          [](const TpRankServerHandle& h, const std::vector<uint32_t>& pages) {
            tp::RankServer& s = h.server();
            const std::vector<PageId> ids = to_pages(pages);
            py::gil_scoped_release release;
            s.map_local(ids);
          },
          py::arg("pages"),
          "Warm-up before the scheduler connects: maps these (unmapped) pages here, all or "
          "nothing. StateError once a scheduler connected.")
      .def(
          "unmap_local",
          [](const TpRankServerHandle& h, const std::vector<uint32_t>& pages) {
            tp::RankServer& s = h.server();
            const std::vector<PageId> ids = to_pages(pages);
            py::gil_scoped_release release;
            s.unmap_local(ids);
          },
          py::arg("pages"), "Gives warm-up pages back; a scheduler is refused while any is mapped.")
      .def(
          "set_unmap_stream",
          [](const TpRankServerHandle& h, uintptr_t stream) {
            h.server().set_unmap_stream(stream);
          },
          py::arg("stream"), "Unmap commands first wait for the work queued on this CUstream.")
      .def_property_readonly("mapped_pages",
                             [](const TpRankServerHandle& h) { return h.server().mapped_pages(); })
      .def_property_readonly(
          "num_pages", [](const TpRankServerHandle& h) { return h.server().space().num_pages(); })
      .def_property_readonly(
          "page_bytes", [](const TpRankServerHandle& h) { return h.server().space().page_bytes(); },
          "Physical bytes of one page of this rank (all its handles).")
      .def_property_readonly(
          "phase", [](const TpRankServerHandle& h) { return phase_name(h.server().phase()); },
          "'listening' (no scheduler yet), 'serving' or 'finished' (its session ended).")
      .def_property_readonly("channel",
                             [](const TpRankServerHandle& h) { return h.server().channel(); })
      .def_property_readonly("refused_peers",
                             [](const TpRankServerHandle& h) { return h.server().refused_peers(); })
      .def_property_readonly("error",
                             [](const TpRankServerHandle& h) { return h.server().error(); })
      .def("tensor", &TpRankServerHandle::tensor, py::arg("layer"), py::arg("component") = 0,
           "As KvCache.tensor: (num_blocks, block_size, kv_heads, head_dim) of this rank.")
      .def(
          "view",
          [](const TpRankServerHandle& h, uint64_t byte_offset, std::vector<int64_t> shape,
             std::vector<int64_t> strides, const std::string& dtype) {
            return h.view(byte_offset, std::move(shape), std::move(strides), parse_dtype(dtype));
          },
          py::arg("byte_offset"), py::arg("shape"), py::arg("strides"), py::arg("dtype"))
      .def("tensor_offset", &TpRankServerHandle::tensor_offset, py::arg("layer"),
           py::arg("component") = 0)
      .def_property_readonly("block_stride_bytes", &TpRankServerHandle::block_stride_bytes)
      .def_property_readonly(
          "num_blocks", [](const TpRankServerHandle& h) { return h.server().space().num_blocks(); })
      .def_property_readonly("layout",
                             [](const TpRankServerHandle& h) {
                               return kv::layout_name(h.server().space().config().layout);
                             })
      .def_property_readonly("dtype", [](const TpRankServerHandle& h) { return h.dtype().name; })
      .def("close", &TpRankServerHandle::close,
           "Drops this object's reference: the session ends (the scheduler sees this rank gone) "
           "once no tensor view remains.")
      .def_property_readonly("closed", &TpRankServerHandle::closed)
      .def("_abandon_after_fork", &TpRankServerHandle::abandon_after_fork, py::arg("parent_pid"),
           "Used by kvpager's fork handler in the child: abandons this copy.");
}

}  // namespace kvpager::python
