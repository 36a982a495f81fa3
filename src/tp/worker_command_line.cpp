// The worker's command line: written by the scheduler, read back by `kvpager tp-worker`.
// Both directions live here so they cannot drift apart.
#include <functional>
#include <map>

#include "kvpager/common/env_number.hpp"
#include "kvpager/common/error.hpp"
#include "kvpager/tp/tp_worker.hpp"

namespace kvpager::tp {

namespace {

const char* choice_name(vmm::BackendChoice c) {
  switch (c) {
    case vmm::BackendChoice::kAuto:
      return "auto";
    case vmm::BackendChoice::kHost:
      return "host";
    case vmm::BackendChoice::kCuda:
      return "cuda";
  }
  return "auto";
}

uint64_t number(const std::string& key, const std::string& value) {
  try {
    return parse_env_number(key, value, "a number");  // digits only: no sign, no trailing text
  } catch (const InvalidArgument&) {
    throw InvalidArgument("tp-worker: " + key + " '" + value + "' is not a number");
  }
}

}  // namespace

std::vector<std::string> worker_command_line(const WorkerLaunch& l) {
  const WorkerConfig& c = l.config;
  std::vector<std::string> a = {
      "kvpager",
      "tp-worker",
      "--rank",
      std::to_string(l.rank.value),
      "--transport",
      transport_name(l.transport),
      "--channel-fd",
      std::to_string(l.channel_fd),
      "--parent-pid",
      std::to_string(l.parent_pid),
      "--device-lock-fd",
      std::to_string(l.device_lock_fd),
      "--backend",
      choice_name(c.backend.choice),
      "--device",
      std::to_string(c.backend.device),
      "--host-granularity",
      std::to_string(c.backend.host_granularity),
      "--host-capacity",
      std::to_string(c.backend.host_capacity_bytes),
      "--num-layers",
      std::to_string(c.geometry.num_layers),
      "--kv-heads",
      std::to_string(c.geometry.kv_heads),
      "--head-dim",
      std::to_string(c.geometry.head_dim),
      "--dtype-bytes",
      std::to_string(c.geometry.dtype_bytes),
      "--block-size",
      std::to_string(c.geometry.block_size),
      "--latent",
      c.geometry.kind == kv::KvKind::kLatent ? "1" : "0",
      "--layout",
      kv::layout_name(c.layout),
      "--virtual-bytes",
      std::to_string(c.virtual_bytes),
      "--num-blocks",
      std::to_string(c.num_blocks),
      "--handle-bytes",
      std::to_string(c.handle_bytes),
      "--ready-pages",
      std::to_string(c.ready_pages),
      "--pool",
      c.pool ? "1" : "0",
      "--background-refill",
      c.background_refill ? "1" : "0",
      "--spin-us",
      std::to_string(c.spin_us),
      "--lock-spin-us",
      std::to_string(c.lock_spin_us),
  };
  if (l.fault.rank == static_cast<int>(l.rank.value)) {
    a.push_back("--inject-fault");
    a.push_back(format_fault(l.fault));
  }
  return a;
}

WorkerLaunch parse_worker_command_line(const std::vector<std::string>& args) {
  WorkerLaunch l;
  WorkerConfig& c = l.config;
  std::string fault;
  using Setter = std::function<void(const std::string&, const std::string&)>;
  auto u32 = [](uint32_t& field) {
    return Setter([&field](const std::string& k, const std::string& v) {
      field = static_cast<uint32_t>(number(k, v));
    });
  };
  auto u64 = [](uint64_t& field) {
    return Setter([&field](const std::string& k, const std::string& v) { field = number(k, v); });
  };
  auto flag = [](bool& field) {
    return Setter(
        [&field](const std::string& k, const std::string& v) { field = number(k, v) != 0; });
  };
  uint64_t granularity = c.backend.host_granularity;
  uint32_t rank = 0, device = 0, fd = 3, parent = 0;
  std::string lock_fd = "-1";
  bool latent = false;
  const std::map<std::string, Setter> setters = {
      {"--rank", u32(rank)},
      {"--transport", [&](auto&, auto& v) { l.transport = parse_transport(v); }},
      {"--channel-fd", u32(fd)},
      {"--parent-pid", u32(parent)},
      {"--device-lock-fd", [&](auto&, auto& v) { lock_fd = v; }},
      {"--backend", [&](auto&, auto& v) { c.backend.choice = vmm::parse_backend_choice(v); }},
      {"--device", u32(device)},
      {"--host-granularity", u64(granularity)},
      {"--host-capacity", u64(c.backend.host_capacity_bytes)},
      {"--num-layers", u32(c.geometry.num_layers)},
      {"--kv-heads", u32(c.geometry.kv_heads)},
      {"--head-dim", u32(c.geometry.head_dim)},
      {"--dtype-bytes", u32(c.geometry.dtype_bytes)},
      {"--block-size", u32(c.geometry.block_size)},
      {"--latent", flag(latent)},
      {"--layout", [&](auto&, auto& v) { c.layout = kv::parse_layout(v); }},
      {"--virtual-bytes", u64(c.virtual_bytes)},
      {"--num-blocks", u64(c.num_blocks)},
      {"--handle-bytes", u64(c.handle_bytes)},
      {"--ready-pages", u32(c.ready_pages)},
      {"--pool", flag(c.pool)},
      {"--background-refill", flag(c.background_refill)},
      {"--spin-us", u32(c.spin_us)},
      {"--lock-spin-us", u32(c.lock_spin_us)},
      {"--inject-fault", [&](auto&, auto& v) { fault = v; }},
  };
  for (size_t i = 0; i < args.size(); i += 2) {
    auto it = setters.find(args[i]);
    if (it == setters.end() || i + 1 >= args.size()) {
      throw InvalidArgument("tp-worker: unexpected argument '" + args[i] + "'");
    }
    it->second(args[i], args[i + 1]);
  }
  l.rank = RankId(rank);
  l.channel_fd = static_cast<int>(fd);
  l.parent_pid = static_cast<pid_t>(parent);
  l.device_lock_fd = lock_fd == "-1" ? -1 : static_cast<int>(number("--device-lock-fd", lock_fd));
  c.backend.device = static_cast<int>(device);
  c.backend.host_granularity = granularity;
  c.geometry.kind = latent ? kv::KvKind::kLatent : kv::KvKind::kKeyValue;
  if (!fault.empty()) l.fault = parse_fault(fault, static_cast<int>(rank));
  return l;
}

}  // namespace kvpager::tp
