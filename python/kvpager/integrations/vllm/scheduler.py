"""The scheduler side of vLLM on kvpager (engine-core process).

* ``kv_cache_coordinator.BlockPool``: the class vLLM's KV-cache coordinator builds its pool
  from becomes block_pool.KvpagerBlockPool, which hands out the worker's kvpager blocks
  (tensor_parallel_size 1), or those of the scheduler-side cache over every rank (N > 1;
  worker.scheduler_kv, from the configs ``Scheduler.__init__`` records).
* ``KVCacheCoordinator.get_num_blocks_to_allocate``: right after vLLM computes how many new
  blocks a request needs (and right before it checks the free count), the pool stages them.
* ``Scheduler.schedule``: each step starts with ``pay_debt()`` (staged leftovers back; cached
  pages evicted when another instance claims memory or a limit was lowered).
* An idle engine does not step (vLLM's engine core blocks on its input queue), yet a limit
  lowered or a claim made then must still be paid: a daemon thread (:class:`IdleDebtPayer`)
  pays the debt whenever the scheduler is not inside one of its methods that touch the block
  pool (``schedule``, ``update_from_output``, ``finish_requests``, ``reset_prefix_cache``, all
  wrapped to hold :data:`pool_lock`).

Thread safety: vLLM calls the wrapped methods from its engine-core thread; the idle payer takes
the pool only with pool_lock, never waiting for it.
"""

from __future__ import annotations

import logging
import threading

from . import worker
from .block_pool import block_pool_class

logger = logging.getLogger("vllm.kvpager")

_pool_class = None
pool_lock = threading.RLock()  # the block pool's owner: vLLM's scheduler or the idle payer
_IDLE_POLL_S = 0.01


def pool_class(base):
    """KvpagerBlockPool for vLLM's BlockPool class ``base`` (made once)."""
    global _pool_class
    if _pool_class is None or _pool_class.__mro__[1] is not base:
        _pool_class = block_pool_class(base, worker.scheduler_kv)
    return _pool_class


def constructing(original):
    """Scheduler.__init__: records its configs first, from which worker.scheduler_kv builds the
    tensor-parallel scheduler-side cache when the block pool asks for it."""

    def __init__(self, vllm_config, kv_cache_config, *args, **kwargs):
        worker.scheduler_plan(vllm_config, kv_cache_config)
        return original(self, vllm_config, kv_cache_config, *args, **kwargs)

    return __init__


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


class IdleDebtPayer(threading.Thread):
    """Pays ``pool``'s debt while vLLM's scheduler leaves it alone (an idle engine)."""

    def __init__(self, pool) -> None:
        super().__init__(name="kvpager-vllm-idle-debt", daemon=True)
        self.pool = pool

    def run(self) -> None:
        stop = threading.Event()
        while not stop.wait(_IDLE_POLL_S):
            if self.pool.kv.closed:
                return
            if not pool_lock.acquire(blocking=False):
                continue  # the scheduler is at work: it pays at its next step
            try:
                self.pool.pay_debt()
            except Exception:  # the cache closed under it: stop quietly
                logger.debug("kvpager: idle debt payer stops", exc_info=True)
                return
            finally:
                pool_lock.release()


_payers: dict[int, IdleDebtPayer] = {}


def holding_pool(original):
    """A Scheduler method that touches the block pool, run under pool_lock."""

    def locked(self, *args, **kwargs):
        with pool_lock:
            return original(self, *args, **kwargs)

    return locked


def schedule(original):
    def schedule(self, *args, **kwargs):
        with pool_lock:
            pool = self.kv_cache_manager.block_pool
            if is_kvpager_pool(pool):
                if id(pool) not in _payers:
                    _payers[id(pool)] = IdleDebtPayer(pool)
                    _payers[id(pool)].start()
                pool.pay_debt()
            return original(self, *args, **kwargs)

    return schedule
