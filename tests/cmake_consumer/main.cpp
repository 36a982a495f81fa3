// Links an installed kvpager (find_package(kvpager)): a KvCache on the host backend hands out
// and takes back blocks, a refused alloc throws kvpager's own error type, the installed model
// catalogue (KVPAGER_MODELS_DIR) loads a model, and the batch (CUDA runtime, kernels) and tp
// libraries link. Exit 0 when all of it holds.
#include <cstdio>
#include <memory>
#include <vector>

#include "kvpager/batch/block_table_manager.hpp"
#include "kvpager/batch/gpu_batch_preparer.hpp"
#include "kvpager/common/error.hpp"
#include "kvpager/kv/kv_cache.hpp"
#include "kvpager/model/catalogue.hpp"
#include "kvpager/tp/tp_config.hpp"
#include "kvpager/vmm/host_backend.hpp"

using namespace kvpager;

#define CHECK(cond)                                                  \
  do {                                                               \
    if (!(cond)) {                                                   \
      std::fprintf(stderr, "kvpager_consumer: failed: %s\n", #cond); \
      return 1;                                                      \
    }                                                                \
  } while (0)

int main() {
  kv::KvCacheConfig c;
  c.geometry = {/*layers*/ 4, /*kv heads*/ 2, /*head dim*/ 64, /*dtype bytes*/ 2, /*block*/ 16};
  c.num_blocks = 64;
  c.background = false;
  kv::KvCache cache(std::make_shared<vmm::HostBackend>(), c);
  std::vector<BlockId> blocks = cache.alloc(8);
  CHECK(blocks.size() == 8);
  CHECK(cache.stats().blocks_in_use == 8);
  CHECK(cache.mapped_bytes() > 0);
  bool refused = false;
  try {
    (void)cache.alloc(1000);  // more blocks than the cache can ever hold
  } catch (const InvalidArgument&) {
    refused = true;
  }
  CHECK(refused);
  cache.free(blocks);
  CHECK(cache.stats().blocks_in_use == 0);
  cache.trim();
  const model::ModelArchitecture llama =
      model::find_architecture("llama-3.1-8b", model::catalogue_dirs());
  CHECK(llama.num_layers == 32);
  batch::BatchConfig bc;
  bc.num_blocks = 128;
  const batch::BlockTableManager tables(bc);
  CHECK(tables.free_blocks() == 128);
  CHECK(tp::tp_config_from_env().tp_size == 1);
  std::printf(
      "kvpager_consumer: ok (%zu blocks available, model %s with %u layers, GPU kernels %s)\n",
      cache.available(), llama.name.c_str(), llama.num_layers,
      batch::gpu_kernels_built() ? "built" : "not built");
  return 0;
}
