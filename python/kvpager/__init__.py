"""kvpager: elastic KV-cache memory for LLM serving.

The KV tensors of a model live in reserved virtual memory; physical memory (CUDA VMM handles on
a GPU, memfd pages on the host backend) is mapped a page at a time only while blocks are in use.
Tensors reach PyTorch, CuPy and NumPy through DLPack with no copy.

Two ways in:

* kvpager's own API: ``KvCache(num_layers, kv_heads, head_dim, dtype, block_size, num_blocks)``
  with ``alloc(n)``, ``free(ids)``, ``trim()``, ``resize(limit_bytes)``, ``stats()`` and
  ``tensor(layer, component)`` / ``torch_tensor(layer, component)``.
* Tensor parallelism: ``TpRankServer`` in each rank's process holds that rank's tensors; a
  ``KvCache(..., tp_token=..., tp_size=N)`` elsewhere maps their pages (see ``kvpager.tp``).
* The serving-engine interface with kvcached's names: ``init_kvcached``, ``alloc_kv_cache``,
  ``get_kv_cache_manager``, ``shutdown_kvcached`` (see ``kvpager.engine``).

Errors are ``kvpager.Error`` (a RuntimeError) subclasses carrying kvpager's message:
``OutOfMemory`` (also a MemoryError), ``InvalidArgument`` (also a ValueError), ``StateError``,
``Timeout`` (also a TimeoutError) and ``DriverError``.
"""

from ._kvpager import (
    DLPACK_VERSION,
    DriverError,
    Error,
    InvalidArgument,
    KvTensor,
    OutOfMemory,
    StateError,
    Timeout,
    known_dtypes,
    registry_snapshot,
)
from ._kvpager import (
    __version__ as __version__,  # re-exported: kvpager.__version__
)
from .cache import KvCache
from .dtypes import dtype_name
from .engine import (
    KvCacheManager,
    alloc_kv_cache,
    get_kv_cache_manager,
    init_kvcached,
    shutdown_kvcached,
)
from .torch_interop import to_torch
from .tp import TpRankServer

__all__ = [
    "DLPACK_VERSION",
    "DriverError",
    "Error",
    "InvalidArgument",
    "KvCache",
    "KvCacheManager",
    "KvTensor",
    "OutOfMemory",
    "StateError",
    "Timeout",
    "TpRankServer",
    "alloc_kv_cache",
    "dtype_name",
    "get_kv_cache_manager",
    "init_kvcached",
    "known_dtypes",
    "registry_snapshot",
    "shutdown_kvcached",
    "to_torch",
]
