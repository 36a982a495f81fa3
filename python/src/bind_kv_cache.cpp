// Python face of KvCacheHandle: kvpager._kvpager.KvCache (kvpager.KvCache builds on it).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "kv_cache_handle.hpp"
#include "kvpager/common/error.hpp"

namespace py = pybind11;

namespace kvpager::python {

namespace {

py::dict stats_dict(const kv::KvCacheStats& s) {
  py::dict pool;
  pool["ready"] = s.pool.ready;
  pool["on_loan"] = s.pool.on_loan;
  pool["created"] = s.pool.created;
  pool["released"] = s.pool.released;
  pool["acquired_ready"] = s.pool.acquired_ready;
  pool["acquired_cold"] = s.pool.acquired_cold;
  pool["ready_bytes"] = s.pool.ready_bytes;
  py::dict d;
  d["num_blocks"] = s.num_blocks;
  d["usable_blocks"] = s.usable_blocks;
  d["blocks_in_use"] = s.blocks_in_use;
  d["free_mapped_blocks"] = s.free_mapped_blocks;
  d["available_blocks"] = s.available_blocks;
  d["available_within_limit_blocks"] = s.available_within_limit_blocks;
  d["guarantee_bytes"] = s.guarantee_bytes;
  d["owed_bytes"] = s.owed_bytes;
  d["num_pages"] = s.num_pages;
  d["mapped_pages"] = s.mapped_pages;
  d["free_pages"] = s.free_pages;
  d["max_blocks_per_page"] = s.max_blocks_per_page;
  d["page_bytes"] = s.page_bytes;
  d["mapped_bytes"] = s.mapped_bytes;
  d["peak_mapped_bytes"] = s.peak_mapped_bytes;
  d["in_use_bytes"] = s.in_use_bytes;
  d["limit_bytes"] = s.limit_bytes;
  d["virtual_bytes"] = s.virtual_bytes;
  d["alloc_calls"] = s.alloc_calls;
  d["free_calls"] = s.free_calls;
  d["cold_allocs"] = s.cold_allocs;
  d["pages_mapped_total"] = s.pages_mapped_total;
  d["pages_unmapped_total"] = s.pages_unmapped_total;
  d["pages_given_back_total"] = s.pages_given_back_total;
  d["pool"] = pool;
  return d;
}

std::vector<BlockId> to_block_ids(const std::vector<int64_t>& ids) {
  std::vector<BlockId> out;
  out.reserve(ids.size());
  for (int64_t id : ids) {
    if (id < INT32_MIN || id > INT32_MAX) {
      throw InvalidArgument("free: block id " + std::to_string(id) + " is out of range");
    }
    out.emplace_back(static_cast<int32_t>(id));
  }
  return out;
}

}  // namespace

void bind_kv_cache(py::module_& m) {
  py::class_<KvCacheHandle>(m, "KvCache", R"doc(
The elastic KV cache of one model instance (one rank): virtual KV tensors whose pages are
mapped only while they hold blocks in use. Block 0 is the null block (always mapped, never
handed out). Every method is thread-safe and releases the GIL while it works.
Errors: kvpager.OutOfMemory (limit/budget/device exhausted), kvpager.InvalidArgument
(a ValueError: bad sizes, unknown ids, double frees), kvpager.StateError (closed cache); a
failed call changes nothing.)doc")
      .def(py::init([](uint32_t num_layers, uint32_t kv_heads, uint32_t head_dim, std::string dtype,
                       uint32_t block_size, uint64_t num_blocks, std::string kind,
                       std::optional<std::string> layout, std::optional<uint64_t> limit_bytes,
                       std::optional<uint64_t> handle_bytes, std::optional<size_t> reserve_pages,
                       std::optional<size_t> max_idle_pages, std::optional<bool> zero_fill,
                       std::optional<std::string> backend, std::optional<int> device,
                       std::optional<uintptr_t> stream, std::optional<std::string> instance,
                       std::string model, std::optional<uint64_t> guarantee_bytes,
                       std::optional<std::string> tp_token, int tp_size,
                       std::optional<uint64_t> pool_share_bytes) {
             KvCacheOptions o;
             static_cast<KvShape&>(o) =
                 KvShape{num_layers,   kv_heads,           head_dim,        std::move(dtype),
                         block_size,   num_blocks,         std::move(kind), std::move(layout),
                         handle_bytes, std::move(backend), device,          stream};
             o.limit_bytes = limit_bytes;
             o.reserve_pages = reserve_pages;
             o.max_idle_pages = max_idle_pages;
             o.zero_fill = zero_fill;
             o.instance = std::move(instance);
             o.model = std::move(model);
             o.guarantee_bytes = guarantee_bytes;
             o.tp_token = std::move(tp_token);
             o.tp_size = tp_size;
             o.pool_share_bytes = pool_share_bytes;
             py::gil_scoped_release release;
             return std::make_unique<KvCacheHandle>(o);
           }),
           py::kw_only(), py::arg("num_layers"), py::arg("kv_heads"), py::arg("head_dim"),
           py::arg("dtype") = "float16", py::arg("block_size") = 16, py::arg("num_blocks") = 0,
           py::arg("kind") = "kv", py::arg("layout") = py::none(),
           py::arg("limit_bytes") = py::none(), py::arg("handle_bytes") = py::none(),
           py::arg("reserve_pages") = py::none(), py::arg("max_idle_pages") = py::none(),
           py::arg("zero_fill") = py::none(), py::arg("backend") = py::none(),
           py::arg("device") = py::none(), py::arg("stream") = py::none(),
           py::arg("instance") = py::none(), py::arg("model") = "",
           py::arg("guarantee_bytes") = py::none(), py::arg("tp_token") = py::none(),
           py::arg("tp_size") = 0, py::arg("pool_share_bytes") = py::none())
      .def(
          "alloc",
          [](const KvCacheHandle& h, size_t n) {
            std::shared_ptr<kv::KvCache> c = h.shared();
            std::vector<BlockId> ids;
            {
              py::gil_scoped_release release;
              ids = c->alloc(n);
            }
            std::vector<int32_t> out(ids.size());
            for (size_t i = 0; i < ids.size(); ++i) out[i] = ids[i].value;
            return out;
          },
          py::arg("n"), "n block ids, all or nothing. OutOfMemory when they do not fit now.")
      .def(
          "free",
          [](const KvCacheHandle& h, const std::vector<int64_t>& ids) {
            std::shared_ptr<kv::KvCache> c = h.shared();
            const std::vector<BlockId> blocks = to_block_ids(ids);
            py::gil_scoped_release release;
            c->free(blocks);
          },
          py::arg("ids"),
          "Frees blocks, all or nothing: unknown ids, the null block and double frees raise "
          "InvalidArgument and free nothing.")
      .def(
          "available", [](const KvCacheHandle& h) { return h.cache().available(); },
          "Blocks alloc() can hand out now (mapping more pages within the limit and what a "
          "shared device budget has left; others may take it first).")
      .def(
          "owed_blocks", [](const KvCacheHandle& h) { return h.cache().owed_blocks(); },
          "Blocks' worth of pages this cache owes to other instances' claims on their "
          "guarantees (0 mostly); while above 0, available() is 0.")
      .def(
          "ask_for_room",
          [](const KvCacheHandle& h, size_t blocks) { h.cache().ask_for_room(blocks); },
          py::arg("blocks") = 0,
          "Asks the other registry instances on this device to give back their free pages, "
          "as a refused alloc would: for a caller waiting because others hold the room "
          "(stats()['available_within_limit_blocks'] > available()). Below its guarantee it "
          "claims the pages `blocks` more blocks need (0: the whole guarantee). No-op when "
          "unregistered.")
      .def(
          "device_budget",
          [](const KvCacheHandle& h) {
            limits::DeviceBudget& d = h.registration().device_budget();
            py::dict out;
            out["device"] = d.device();
            out["budget_bytes"] = d.budget_bytes();
            out["charged_bytes"] = d.charged_total();
            out["total_bytes"] = d.total_bytes();
            out["pressure"] = d.pressure();
            out["pressure_from_others"] = h.registration().pressure_from_others();
            return out;
          },
          "The registry device this cache charges: {'device', 'budget_bytes', 'charged_bytes' "
          "(every member's charge), 'total_bytes', 'pressure' (a counter bumped whenever a "
          "member is refused or asks for room), 'pressure_from_others' (the bumps the other "
          "members made since this cache joined; never its own)}. StateError without an "
          "instance name.")
      .def(
          "pool_budget_share",
          [](const KvCacheHandle& h, uint64_t share) {
            limits::InstanceRegistration& r = h.registration();
            py::gil_scoped_release unlocked;
            return r.pool_budget_share(share);
          },
          py::arg("share_bytes"),
          "Pools this engine's share of the device into the shared budget: the budget becomes "
          "`share_bytes` when this is the device's only live instance, else grows by it. "
          "Returns the new budget. Take it out again with unpool_budget_share() on shutdown.")
      .def(
          "set_guarantee",
          [](const KvCacheHandle& h, uint64_t bytes) {
            limits::InstanceRegistration& r = h.registration();
            py::gil_scoped_release unlocked;
            r.set_guarantee(bytes);
          },
          py::arg("guarantee_bytes"),
          "Sets this instance's guaranteed share of the device budget (as `kvpager guarantee` "
          "does). InvalidArgument when the device's guarantees would sum above its budget "
          "(a cache pooling its share sets its guarantee with it: pool_share_bytes).")
      .def(
          "unpool_budget_share",
          [](const KvCacheHandle& h, uint64_t share) {
            limits::InstanceRegistration& r = h.registration();
            py::gil_scoped_release unlocked;
            return r.unpool_budget_share(share);
          },
          py::arg("share_bytes"),
          "Takes a pooled share out of the device budget as this engine leaves: its guarantee "
          "goes with it, and the budget stays at least the others' guarantees. Returns the new "
          "budget.")
      .def(
          "count_evicted_blocks",
          [](const KvCacheHandle& h, uint64_t blocks) {
            h.registration().count_evicted_blocks(blocks);
          },
          py::arg("blocks"),
          "Adds `blocks` to this instance's registry count of cached blocks its engine evicted "
          "under pressure (registry_snapshot() and `kvpager list --json`: evicted_blocks). "
          "StateError without an instance name.")
      .def(
          "mapped_bytes", [](const KvCacheHandle& h) { return h.cache().mapped_bytes(); },
          "Physical bytes mapped now.")
      .def(
          "resize",
          [](const KvCacheHandle& h, uint64_t limit_bytes) {
            std::shared_ptr<kv::KvCache> c = h.shared();
            py::gil_scoped_release release;
            c->resize(limit_bytes);
          },
          py::arg("limit_bytes"),
          "Sets the mapped-memory limit (0: none, no limit; note `kvpager limit NAME 0` means a "
          "limit of 0 bytes there, and `kvpager limit NAME none` means no limit). Free pages "
          "above it are unmapped now; pages with blocks in use stay until their blocks are "
          "freed.")
      .def(
          "trim",
          [](const KvCacheHandle& h) {
            std::shared_ptr<kv::KvCache> c = h.shared();
            py::gil_scoped_release release;
            return c->trim();
          },
          "Unmaps every free page now and releases the pool's ready handles; returns the bytes "
          "unmapped.")
      .def(
          "set_unmap_stream",
          [](const KvCacheHandle& h, uintptr_t stream) { h.shared()->set_unmap_stream(stream); },
          py::arg("stream"),
          "From now on, unmapping a page waits for the work queued on this CUstream handle "
          "(e.g. torch.cuda.Stream.cuda_stream; 0 is the legacy default stream).")
      .def(
          "stats", [](const KvCacheHandle& h) { return stats_dict(h.cache().stats()); },
          "A dict of the cache's statistics (kv::KvCacheStats, with 'pool' nested).")
      .def(
          "is_allocated",
          [](const KvCacheHandle& h, int32_t id) { return h.cache().is_allocated(BlockId{id}); },
          py::arg("id"))
      .def("tensor", &KvCacheHandle::tensor, py::arg("layer"), py::arg("component") = 0,
           "The view of one layer's K (component 0), V (1) or MLA latent (0): shape (num_blocks, "
           "block_size, kv_heads, head_dim), strides in elements.")
      .def(
          "view",
          [](const KvCacheHandle& h, uint64_t byte_offset, std::vector<int64_t> shape,
             std::vector<int64_t> strides, const std::string& dtype) {
            return h.view(byte_offset, std::move(shape), std::move(strides), parse_dtype(dtype));
          },
          py::arg("byte_offset"), py::arg("shape"), py::arg("strides"), py::arg("dtype"),
          "Any strided view of the virtual space (offset in bytes from its start, strides in "
          "elements); InvalidArgument if it reaches outside the space.")
      .def("tensor_offset", &KvCacheHandle::tensor_offset, py::arg("layer"),
           py::arg("component") = 0,
           "Byte offset of a layer's K/V/latent tensor from the start of the space.")
      .def_property_readonly("block_stride_bytes", &KvCacheHandle::block_stride_bytes,
                             "Bytes between consecutive blocks of one tensor (the whole "
                             "all-layer cell for the interleaved layout).")
      .def_property_readonly(
          "handle_bytes", [](const KvCacheHandle& h) { return h.cache().config().handle_bytes; },
          "Bytes of one page of one tensor (of one rank, for a tensor-parallel cache): page p "
          "holds the blocks lying wholly in bytes [p * handle_bytes, (p + 1) * handle_bytes) "
          "of every tensor.")
      .def("_abandon_after_fork", &KvCacheHandle::abandon_after_fork, py::arg("parent_pid"),
           "Used by kvpager's fork handler in the child: abandons this copy (see close()).")
      .def_property_readonly("forked", &KvCacheHandle::forked,
                             "True in a forked child: the cache is the parent's and unusable.")
      .def("close", &KvCacheHandle::close,
           "Drops this object's reference; memory is released once no tensor view remains. "
           "Later calls raise StateError.")
      .def_property_readonly("closed", &KvCacheHandle::closed)
      .def_property_readonly("null_block", [](const KvCacheHandle&) { return 0; })
      .def_property_readonly("num_blocks", &KvCacheHandle::num_blocks)
      .def_property_readonly("num_layers",
                             [](const KvCacheHandle& h) { return h.geometry().num_layers; })
      .def_property_readonly("kv_heads",
                             [](const KvCacheHandle& h) { return h.geometry().kv_heads; })
      .def_property_readonly("head_dim",
                             [](const KvCacheHandle& h) { return h.geometry().head_dim; })
      .def_property_readonly("block_size",
                             [](const KvCacheHandle& h) { return h.geometry().block_size; })
      .def_property_readonly("components",
                             [](const KvCacheHandle& h) { return h.geometry().components(); })
      .def_property_readonly("kind",
                             [](const KvCacheHandle& h) {
                               return h.geometry().kind == kv::KvKind::kLatent ? "latent" : "kv";
                             })
      .def_property_readonly("dtype", [](const KvCacheHandle& h) { return h.dtype().name; })
      .def_property_readonly("itemsize", [](const KvCacheHandle& h) { return h.dtype().bytes; })
      .def_property_readonly("layout",
                             [](const KvCacheHandle& h) { return kv::layout_name(h.layout()); })
      .def_property_readonly("device",
                             [](const KvCacheHandle& h) {
                               const DLDevice d = h.device();
                               return d.device_type == kDLCUDA
                                          ? "cuda:" + std::to_string(d.device_id)
                                          : std::string("cpu");
                             })
      .def_property_readonly("backend", &KvCacheHandle::backend_description,
                             "The backend, e.g. 'cuda:0 (NVIDIA H100 80GB HBM3)'.");
}

}  // namespace kvpager::python
