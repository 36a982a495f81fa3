"""Engine internals an integration relies on, and the attributes it replaces.

* Fingerprints: an integration relies on engine internals that no API promises. It lists them
  with the sha256 of their source as of the version it was written for; :func:`check_internals`
  names the first one that is missing or changed, so a user of another version gets one line
  saying what moved instead of a wrong result later.
* :class:`Patches`: attributes an integration replaces while enabled, restored exactly on
  disable (each engine module keeps one).

Errors: check_internals raises the error class its caller names (one line); Patches.set raises
AttributeError when the attribute does not exist. Thread safety: the functions are pure apart
from reading source files; Patches is not thread-safe (each integration serialises
enable/disable with its own lock).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Mapping
from typing import Any, Callable

__all__ = ["Patches", "check_internals", "current_fingerprints", "fingerprint"]


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
