#include "kv_cache_handle.hpp"

#include "kvpager/common/error.hpp"
#include "kvpager/limits/instance_registration.hpp"
#include "kvpager/limits/registry_config.hpp"
#include "kvpager/tp/tp_page_store.hpp"
#include "kvpager/vmm/backend.hpp"

namespace kvpager::python {

namespace {

// An option the caller passed (not None) replaces the default.
template <typename T, typename U>
void set_if_given(T& field, const std::optional<U>& option) {
  if (option) {
    field = *option;
  }
}

}  // namespace

KvCacheHandle::KvCacheHandle(const KvCacheOptions& o) : dtype_(&parse_dtype(o.dtype)) {
  kv::KvCacheConfig config;
  config.geometry = o.geometry(*dtype_);
  config = kv::kv_cache_config_from_env(config);
  config.num_blocks = o.num_blocks;
  config.layout = o.layout_or(config.layout);
  set_if_given(config.limit_bytes, o.limit_bytes);
  set_if_given(config.handle_bytes, o.handle_bytes);
  set_if_given(config.reserve_pages, o.reserve_pages);
  set_if_given(config.max_idle_pages, o.max_idle_pages);
  set_if_given(config.zero_fill_unmapped, o.zero_fill);
  if (o.stream) {
    config.stream = *o.stream;
    config.wait_for_stream_before_unmap = true;
  }

  const vmm::BackendConfig backend_config = o.backend_config();
  std::shared_ptr<vmm::Backend> backend;
  vmm::DeviceIdentity id;
  if (o.tp_size > 0) {
    if (!o.tp_token) {
      throw InvalidArgument("tp_size needs tp_token: the channel token its rank servers use");
    }
    id = vmm::identify_device(backend_config);  // no context: the ranks hold the memory
    backend_description_ = "tp " + std::to_string(o.tp_size) + " ranks on channels '" +
                           *o.tp_token + "' (charged to " + id.name() + ")";
  } else {
    backend = vmm::make_backend(backend_config);
    id.cuda = backend->kind() == vmm::BackendKind::kCuda;
    id.device = backend->device();
    id.total_bytes = backend->memory_info().total_bytes;
    backend_description_ = backend->describe();
  }
  device_ = id.cuda ? DLDevice{kDLCUDA, id.device} : DLDevice{kDLCPU, 0};

  if (o.guarantee_bytes && !o.instance) {
    throw InvalidArgument(
        "guarantee_bytes needs an instance name: a guarantee is a share of a "
        "device budget shared through the registry");
  }
  if (o.pool_share_bytes && !o.instance) {
    throw InvalidArgument(
        "pool_share_bytes needs an instance name: the share is pooled into the device budget "
        "shared through the registry");
  }
  if (o.pool_share_bytes && *o.pool_share_bytes == 0) {
    throw InvalidArgument("pool_share_bytes must be positive (None: pool nothing)");
  }
  if (o.instance) {
    limits::InstanceSpec spec;
    spec.name = *o.instance;
    spec.model = o.model;
    spec.device = id.name();
    spec.device_total_bytes = id.total_bytes;
    if (config.limit_bytes != 0) {
      spec.limit_bytes = config.limit_bytes;
    }
    if (!o.pool_share_bytes) {  // pooling: the guarantee waits for the share (below)
      set_if_given(spec.guarantee_bytes, o.guarantee_bytes);
    }
    registration_ = limits::InstanceRegistration::create(limits::registry_config_from_env(), spec);
    config.registry_link = registration_;
  }
  const uint64_t pooled = o.pool_share_bytes.value_or(0);
  if (pooled != 0) {
    registration_->pool_budget_share(pooled);
  }
  try {
    if (pooled != 0 && o.guarantee_bytes) {
      registration_->set_guarantee(*o.guarantee_bytes);
    }
    if (o.tp_size > 0) {
      tp::TpStoreConfig store;
      store.token = *o.tp_token;
      store.tp = tp::tp_config_from_env(store.tp);
      store.tp.tp_size = o.tp_size;
      cache_ = std::make_shared<kv::KvCache>(tp::TpPageStore::factory(store), config);
    } else {
      cache_ = std::make_shared<kv::KvCache>(std::move(backend), config);
    }
  } catch (...) {
    if (pooled != 0) {  // the guarantee set above leaves with the share
      registration_->unpool_budget_share(pooled);
    }
    throw;
  }
  geometry_ = cache_->config().geometry;
  layout_ = cache_->config().layout;
  num_blocks_ = cache_->config().num_blocks;
}

void KvCacheHandle::abandon_after_fork(long parent_pid) {
  if (forked_from_ != 0 || !cache_) {
    return;
  }
  forked_from_ = parent_pid;
  // Deliberately leaked: the last reference must never drop in this process.
  new std::shared_ptr<kv::KvCache>(cache_);  // NOLINT(cppcoreguidelines-owning-memory)
  if (registration_) {
    new std::shared_ptr<limits::InstanceRegistration>(registration_);  // NOLINT
  }
}

kv::KvCache& KvCacheHandle::cache() const {
  if (forked_from_ != 0) {
    throw StateError("this KV cache belongs to process " + std::to_string(forked_from_) +
                     ", which forked this one; a forked child cannot use or free it (its "
                     "memory and registry entry stay the parent's): create a new KvCache here");
  }
  if (!cache_) {
    throw StateError("this KV cache was closed");
  }
  return *cache_;
}

limits::InstanceRegistration& KvCacheHandle::registration() const {
  cache();
  if (!registration_) {
    throw StateError("this KV cache has no registry entry: build it with instance=NAME");
  }
  return *registration_;
}

std::shared_ptr<kv::KvCache> KvCacheHandle::shared() const {
  cache();
  return cache_;
}

KvRegion KvCacheHandle::region() const {
  const kv::KvCache& c = cache();
  return KvRegion{cache_, device_, c.tensor(0, 0).base, c.space().reserved_bytes()};
}

uint64_t KvCacheHandle::tensor_offset(uint32_t layer, uint32_t component) const {
  const kv::KvCache& c = cache();
  return c.tensor(layer, component).base - c.tensor(0, 0).base;
}

uint64_t KvCacheHandle::block_stride_bytes() const {
  return cache().store().block_stride_bytes();
}

KvTensor KvCacheHandle::tensor(uint32_t layer, uint32_t component) const {
  return natural_tensor(region(), cache().tensor(layer, component), *dtype_);
}

KvTensor KvCacheHandle::view(uint64_t byte_offset, std::vector<int64_t> shape,
                             std::vector<int64_t> strides, const DType& dtype) const {
  return KvTensor::make(region(), byte_offset, std::move(shape), std::move(strides), dtype);
}

}  // namespace kvpager::python
