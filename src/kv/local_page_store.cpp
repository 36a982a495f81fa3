#include "kvpager/kv/local_page_store.hpp"

namespace kvpager::kv {

LocalPageStore::LocalPageStore(std::shared_ptr<vmm::Backend> backend,
                               std::shared_ptr<limits::MemoryBudget> budget,
                               const pool::PagePoolConfig& pool, const KvSpaceConfig& space)
    : backend_(std::move(backend)) {
  pool_ = std::make_unique<pool::PagePool>(backend_, std::move(budget), pool);
  space_ = std::make_unique<KvSpace>(backend_, *pool_, space);
}

LocalPageStore::~LocalPageStore() {
  space_.reset();  // unmaps every page and gives its handles back to the pool first
  pool_.reset();
}

}  // namespace kvpager::kv
