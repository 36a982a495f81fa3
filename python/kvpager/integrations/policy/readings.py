"""What ``KvCache.stats()`` says about the memory others hold and this instance owes.

Each function reads one statistics snapshot (the dict ``KvCache.stats()`` returns; only the keys
named are read) and returns a decision input: whether this instance waits for room that others
hold (:func:`others_hold_room`), whether it holds less than its guarantee
(:func:`short_of_guarantee`), what it must give back (:func:`debt_blocks`).

Pure functions: no I/O, thread-safe. A snapshot missing a key raises KeyError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["debt_blocks", "others_hold_room", "short_of_guarantee"]


def others_hold_room(stats: Mapping[str, Any]) -> bool:
    """True when other caches sharing the budget hold blocks this instance's own limit would let
    it have (and it owes them nothing)."""
    if stats["owed_bytes"] > 0:
        return False
    return stats["available_within_limit_blocks"] > stats["available_blocks"]


def short_of_guarantee(stats: Mapping[str, Any]) -> bool:
    """True when this instance holds less than its guarantee (mapped pages and ready handles)
    and others hold room it could have."""
    held = stats["mapped_bytes"] + stats["pool"]["ready_bytes"]
    return (
        stats["guarantee_bytes"] > held
        and stats["available_within_limit_blocks"] > stats["available_blocks"]
    )


def debt_blocks(stats: Mapping[str, Any], block_bytes: int) -> int:
    """Blocks this instance must give back: what it owes to others' claims on their guarantees,
    or what it holds in use above its own limit (a lowered ``kvpager limit``); the larger."""
    owed = int(stats["owed_bytes"])
    limit = int(stats["limit_bytes"])
    if 0 < limit < stats["in_use_bytes"]:
        owed = max(owed, int(stats["in_use_bytes"]) - limit)
    return -(-owed // block_bytes) if owed > 0 else 0
