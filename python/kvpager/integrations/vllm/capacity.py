"""How big vLLM's KV cache is under kvpager, and which name it has in the registry.

Stock vLLM sizes its KV cache once, at start: ``--gpu-memory-utilization`` times the device's
memory, less what the profile run saw the weights, activations and CUDA graphs take. That
figure (``stock_kv_bytes``) is this engine's share of the device. Under kvpager:

* the shares of the engines on one device are pooled into the device budget of the shared
  registry (an engine alone on its device gets exactly its share; each further engine adds its
  share; one that shuts down takes it out again): together the engines never hold more KV
  memory than their static shares would have, but any one of them may use what the others do
  not need at the moment;
* vLLM's number of blocks is the virtual capacity: as many blocks as the device's memory could
  ever back (the budget may grow while the engine runs), capped by the instance limit and by
  ``max_blocks``, which bounds the block objects vLLM's scheduler keeps; not the memory free at
  start. Physical pages are mapped only for blocks in use.

Pure functions: tested in CI from tables.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["DEFAULT_MAX_BLOCKS", "instance_name", "virtual_bytes"]

DEFAULT_MAX_BLOCKS = 1 << 20

_NAME_BAD = re.compile(r"[^A-Za-z0-9_.-]+")


def instance_name(explicit: str | None, served: str | Sequence[str] | None, model: str) -> str:
    """The registry name: ``explicit`` (KVPAGER_INSTANCE) as given; otherwise vLLM's first
    served model name (or the model path) made into a registry name: characters outside
    [A-Za-z0-9_.-] become '-', at most 63 characters, never starting with '.' or '-'."""
    if explicit:
        return explicit
    if isinstance(served, (list, tuple)):
        served = served[0] if served else None
    base = served or model or "vllm"
    name = _NAME_BAD.sub("-", str(base)).replace("..", ".").lstrip(".-")[:63].rstrip(".-")
    return name or "vllm"


def virtual_bytes(
    *,
    budget_bytes: int,
    bytes_per_block: int,
    limit_bytes: int = 0,
    max_blocks: int = DEFAULT_MAX_BLOCKS,
    min_blocks: int = 0,
) -> int:
    """The KV bytes to tell vLLM it has: enough for every block ``budget_bytes`` (the device's
    memory, as the worker passes it; or the instance limit, when lower) could back, at most
    ``max_blocks`` blocks and at least ``min_blocks`` (what one request of the model's maximum
    length needs), in whole blocks."""
    if bytes_per_block <= 0:
        raise ValueError(f"bytes_per_block must be positive, got {bytes_per_block}")
    cap = budget_bytes if limit_bytes <= 0 else min(budget_bytes, limit_bytes)
    blocks = min(cap // bytes_per_block, max_blocks)
    blocks = max(blocks, min_blocks, 2)  # the null block and one more at least
    return blocks * bytes_per_block
