"""kvpager.TpRankServer: one tensor-parallel rank's KV tensors, driven from another process.

With tensor parallelism each worker process holds its shard of every KV tensor, while one
scheduler (a :class:`kvpager.KvCache` built with ``tp_token`` and ``tp_size``) decides which
pages are mapped: it sends map/unmap commands to every rank over named channels, all or nothing.
Each worker builds one ``TpRankServer`` for its rank, with its shard's geometry (``kv_heads``
is the per-rank head count) and the scheduler's ``num_blocks``; the scheduler connects once
every rank serves.

Channels: abstract AF_UNIX sockets named ``kvpager-tp/<token>/<rank>`` (nothing in the
filesystem); only processes of the same uid are served. Choose the token per engine (e.g. in
the process that starts the workers) so that two engines never meet.

Warm-up: before the scheduler connects, the worker may back pages itself
(``map_local(pages_of_blocks(first, count))``) and must give them back (``unmap_local``)
first: a scheduler is refused while any is mapped. When the scheduler's session ends
(shutdown, or its process died), every page is unmapped and the server finishes.

Lifetime: views and torch tensors keep the server alive; close() (or ``with``) drops this
object's reference. A child forked while a server is open gets an abandoned copy (StateError).
"""

from __future__ import annotations

from . import _kvpager
from .cache import TensorOwner, register_for_fork, shape_options


class TpRankServer(TensorOwner, _kvpager.TpRankServer):
    """Rank ``rank`` of the engine whose channels use ``token``.

    Geometry as for :class:`kvpager.KvCache` (this rank's shard); ``num_blocks`` is required
    and must equal the scheduler's; ``device`` as for KvCache; ``stream``: unmap commands
    first wait for the work queued on this CUstream. Properties: ``phase`` ('listening',
    'serving', 'finished'), ``mapped_pages``, ``num_pages``, ``page_bytes``, ``channel``;
    ``torch_tensor``/``key``/``value`` and ``with`` as for KvCache.
    """

    def __init__(
        self,
        num_layers: int,
        kv_heads: int,
        head_dim: int,
        dtype="float16",
        block_size: int = 16,
        num_blocks: int = 0,
        *,
        token: str,
        rank: int,
        kind: str = "kv",
        layout: str | None = None,
        device=None,
        handle_bytes: int | None = None,
        stream: int | None = None,
    ):
        super().__init__(
            **shape_options(num_layers, kv_heads, head_dim, dtype, block_size, num_blocks,
                            kind=kind, layout=layout, device=device, handle_bytes=handle_bytes,
                            stream=stream),
            token=token,
            rank=rank,
        )
        register_for_fork(self)
