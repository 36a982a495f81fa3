"""What every engine integration of kvpager shares, whatever the engine.

* Fingerprints: an integration relies on engine internals that no API promises. It lists them
  with the sha256 of their source as of the version it was written for; :func:`check_internals`
  names the first one that is missing or changed, so a user of another version gets one line
  saying what moved instead of a wrong result later.
* :class:`Patches`: attributes an integration replaces while enabled, restored exactly on
  disable (each engine module keeps one).
* Memory readings taken from ``KvCache.stats()``: whether this instance waits for room that
  others hold (:func:`others_hold_room`), whether it holds less than its guarantee
  (:func:`short_of_guarantee`), what it must give back (:func:`debt_blocks`), and
  :class:`RoomAsker`, which asks the others for room at a bounded rate.

Thread safety: Patches is not thread-safe (each integration serialises enable/disable with its
own lock); the functions are pure; a RoomAsker is used by one scheduler thread.
"""

from __future__ import annotations

import hashlib
import inspect
import time
from collections.abc import Mapping
from typing import Any, Callable

__all__ = [
    "Patches",
    "RoomAsker",
    "check_internals",
    "current_fingerprints",
    "debt_blocks",
    "fingerprint",
    "others_hold_room",
    "short_of_guarantee",
]


def fingerprint(obj: Any) -> str:
    """The first 16 hex digits of the sha256 of ``inspect.getsource(obj)``."""
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]


def current_fingerprints(names, resolve: Callable[[str], Any]) -> dict[str, str]:
    """Fingerprint of each name (``resolve(name)`` gives the object); 'missing' where the
    object or its source is gone."""
    out = {}
    for name in names:
        try:
            out[name] = fingerprint(resolve(name))
        except (AttributeError, ImportError, OSError, TypeError, KeyError):
            out[name] = "missing"
    return out


def check_internals(
    expected: Mapping[str, str],
    resolve: Callable[[str], Any],
    *,
    integration: str,
    engine: str,
    written_for: str,
    version: str,
    error: type,
) -> None:
    """Raises ``error`` with one line naming the first internal in ``expected`` that ``resolve``
    cannot find or whose source changed; returns None when all match."""
    have = current_fingerprints(expected, resolve)
    for name, want in expected.items():
        got = have[name]
        if got == "missing":
            raise error(
                f"{integration} was written for {engine} {written_for}; "
                f"{engine} {version} has no {name}"
            )
        if got != want:
            raise error(
                f"{integration} was written for {engine} {written_for}; in {engine} {version} "
                f"the source of {name} changed (fingerprint {got}, expected {want})"
            )


class Patches:
    """Attributes replaced on objects (classes, modules) while an integration is enabled."""

    def __init__(self) -> None:
        self._saved: list[tuple[Any, str, Any]] = []

    def set(self, owner: Any, name: str, value: Any) -> Any:
        """Replaces ``owner.name`` with ``value``; returns the original."""
        original = getattr(owner, name)
        self._saved.append((owner, name, original))
        setattr(owner, name, value)
        return original

    def restore(self) -> None:
        """Puts every original back, last patched first."""
        while self._saved:
            owner, name, original = self._saved.pop()
            setattr(owner, name, original)

    def __bool__(self) -> bool:
        return bool(self._saved)


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


def pressure_shed_blocks(cached_blocks: int, blocks_per_page: int) -> int:
    """Cached blocks to give up when another instance was refused memory (the device's pressure
    rose) and this one did not ask itself: an eighth of them, at least four pages' worth, at
    most all. Pressure rises again each time the other asks, so repeated asks take more."""
    return min(cached_blocks, max(4 * blocks_per_page, cached_blocks // 8))


class RoomAsker:
    """Asks the other instances for room at most every ``interval_s``: a scheduler that waits
    never allocates, so no refusal would tell them it waits."""

    def __init__(self, kv, interval_s: float = 0.02) -> None:
        self._kv = kv
        self._interval = interval_s
        self._asked_at = 0.0

    def ask(self, blocks: int) -> bool:
        """Asks (claiming ``blocks`` below the guarantee); False when it asked too recently."""
        now = time.monotonic()
        if now - self._asked_at < self._interval:
            return False
        self._asked_at = now
        self._kv.ask_for_room(max(int(blocks), 1))
        return True

    @property
    def asked_at(self) -> float:
        """time.monotonic() of the last ask (0: never)."""
        return self._asked_at
