#include "kv_shape.hpp"

#include <algorithm>

#include "kvpager/common/error.hpp"

namespace kvpager::python {

kv::KvGeometry KvShape::geometry(const DType& d) const {
  if (kind != "kv" && kind != "latent") {
    throw InvalidArgument("unknown KV kind '" + kind + "' (choose kv or latent)");
  }
  kv::KvGeometry g;
  g.num_layers = num_layers;
  g.kv_heads = kv_heads;
  g.head_dim = head_dim;
  g.dtype_bytes = d.bytes;
  g.block_size = block_size;
  g.kind = kind == "latent" ? kv::KvKind::kLatent : kv::KvKind::kKeyValue;
  g.validate();
  return g;
}

kv::KvLayout KvShape::layout_or(kv::KvLayout fallback) const {
  if (!layout) return fallback;
  std::string name = *layout;
  std::replace(name.begin(), name.end(), '_', '-');
  return kv::parse_layout(name);
}

vmm::BackendConfig KvShape::backend_config() const {
  vmm::BackendConfig c = vmm::backend_config_from_env();
  if (backend) c.choice = vmm::parse_backend_choice(*backend);
  if (device) c.device = *device;
  return c;
}

}  // namespace kvpager::python
