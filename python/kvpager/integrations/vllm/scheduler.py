"""The scheduler side of vLLM on kvpager (engine-core process).

* ``kv_cache_coordinator.BlockPool``: the class vLLM's KV-cache coordinator builds its pool
  from becomes block_pool.KvpagerBlockPool, which hands out the worker's kvpager blocks.
* ``KVCacheCoordinator.get_num_blocks_to_allocate``: right after vLLM computes how many new
  blocks a request needs (and right before it checks the free count), the pool stages them.
* ``Scheduler.schedule``: each step starts with ``pay_debt()`` (staged leftovers back; cached
  pages evicted when another instance claims memory or a limit was lowered).

Thread safety: vLLM calls all three from its engine-core thread.
"""

from __future__ import annotations

from . import worker
from .block_pool import block_pool_class

_pool_class = None


def pool_class(base):
    """KvpagerBlockPool for vLLM's BlockPool class ``base`` (made once)."""
    global _pool_class
    if _pool_class is None or _pool_class.__mro__[1] is not base:
        _pool_class = block_pool_class(base, worker.current)
    return _pool_class


def is_kvpager_pool(pool) -> bool:
    return _pool_class is not None and isinstance(pool, _pool_class)


def get_num_blocks_to_allocate(original):
    def get_num_blocks_to_allocate(self, *args, **kwargs):
        n = original(self, *args, **kwargs)
        pool = self.block_pool
        if is_kvpager_pool(pool):
            pool.stage(n)
        return n

    return get_num_blocks_to_allocate


def schedule(original):
    def schedule(self, *args, **kwargs):
        pool = self.kv_cache_manager.block_pool
        if is_kvpager_pool(pool):
            pool.pay_debt()
        return original(self, *args, **kwargs)

    return schedule
