"""The engine-independent policy every kvpager engine integration shares.

An adapter (``integrations.transformers``, ``integrations.vllm``) reads numbers off its engine
(free blocks, requests running and waiting, what kvpager says is available or owed) and asks
this package what to do; it then does it with the engine's own means. One idea per module:

* :mod:`.internals`: fingerprint checks of the engine internals an adapter touches, and the
  :class:`Patches` it restores on disable;
* :mod:`.readings`: what a ``KvCache.stats()`` snapshot says: others hold room, short of the
  guarantee, the debt in blocks;
* :mod:`.claims`: how much a waiting instance claims, and a throttled :class:`RoomAsker`;
* :mod:`.debt`: how a debt is paid: prefix cache first (whole pages where pages hold several
  blocks), else by preempting the newest requests; what first-come pressure sheds;
* :mod:`.demand`: an engine's largest recent request, which it keeps under others' pressure;
* :mod:`.scheduling`: the free count an engine sees, cached blocks to evict, what a pass that
  scheduled nothing does;
* :mod:`.waits`: spans of passes held back by memory others hold.

Everything is re-exported here (``from kvpager.integrations import policy; policy.debt_blocks``).
Thread safety and errors: see each module; the decision functions are pure and thread-safe,
the small stateful helpers (Patches, Throttle, RoomAsker, WaitSpans) belong to one thread.
"""

from __future__ import annotations

from .claims import RoomAsker, Throttle, blocks_for_tokens, waiting_claim_blocks
from .debt import (
    Payment,
    debt_payment,
    pages_to_pay,
    pressure_shed_blocks,
    whole_cached_pages,
)
from .demand import RecentDemand
from .internals import Patches, check_internals, current_fingerprints, fingerprint
from .readings import debt_blocks, others_hold_room, short_of_guarantee
from .scheduling import (
    ASK_AND_WAIT,
    ENGINE_DECIDES,
    WAIT_FOR_DEBT,
    after_empty_pass,
    cached_blocks_to_evict,
    free_blocks_seen,
    held_back,
    offloading_would_help,
)
from .waits import WaitSpans

__all__ = [
    "ASK_AND_WAIT",
    "ENGINE_DECIDES",
    "WAIT_FOR_DEBT",
    "Patches",
    "Payment",
    "RecentDemand",
    "RoomAsker",
    "Throttle",
    "WaitSpans",
    "after_empty_pass",
    "blocks_for_tokens",
    "cached_blocks_to_evict",
    "check_internals",
    "current_fingerprints",
    "debt_blocks",
    "debt_payment",
    "fingerprint",
    "free_blocks_seen",
    "held_back",
    "offloading_would_help",
    "others_hold_room",
    "pages_to_pay",
    "pressure_shed_blocks",
    "short_of_guarantee",
    "waiting_claim_blocks",
    "whole_cached_pages",
]
