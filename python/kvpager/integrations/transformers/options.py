"""How the caches created while the integration is enabled are built.

:class:`KvpagerOptions` (frozen) holds the knobs; :func:`active` returns those of the current
enable() (None while disabled), which :func:`set_active` changes under ``lock``;
:func:`next_instance_name` names several caches of one process ``instance``, ``instance-1``, ...

Thread safety: ``lock`` (re-entrant) serialises enable/disable and instance naming; active()
reads one reference without it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = ["KvpagerOptions", "active", "lock", "next_instance_name", "set_active"]


@dataclass(frozen=True)
class KvpagerOptions:
    """How caches created while enabled are built (see ``kvpager.KvCache`` for each knob; None
    takes its KVPAGER_* variable or default).

    ``num_blocks``: virtual capacity in blocks. None: transformers' own sizing (the
    ``ContinuousBatchingConfig``'s ``num_blocks``, or what its memory handler computes), so a
    run has exactly the capacity stock transformers would allocate, mapped only as used.
    ``instance``: name in the shared registry (limits, ``kvpager top``); several caches in one
    process get ``instance``, ``instance-1``, ...
    ``guarantee_bytes`` (with ``instance``): the share of the device budget guaranteed to the
    cache. Others borrow it while this engine does not need it; when it waits for memory they
    give it back: their free pages are unmapped and their schedulers see fewer free blocks, so
    transformers offloads (preempts) their newest requests rather than admitting new ones.
    """

    layout: str | None = None
    instance: str | None = None
    model: str = ""
    num_blocks: int | None = None
    limit_bytes: int | None = None
    handle_bytes: int | None = None
    reserve_pages: int | None = None
    max_idle_pages: int | None = None
    zero_fill: bool | None = None
    guarantee_bytes: int | None = None


lock = threading.RLock()
_active: KvpagerOptions | None = None
_instances_made: dict[str, int] = {}  # per instance name: caches created with it


def active() -> KvpagerOptions | None:
    """The options of the current enable(); None while disabled."""
    return _active


def set_active(options: KvpagerOptions | None) -> None:
    global _active
    with lock:
        _active = options


def next_instance_name(base: str | None) -> str | None:
    """``base`` for the first cache made with it, then ``base-1``, ``base-2``, ...; None: None."""
    if base is None:
        return None
    with lock:
        n = _instances_made.get(base, 0)
        _instances_made[base] = n + 1
    return base if n == 0 else f"{base}-{n}"
