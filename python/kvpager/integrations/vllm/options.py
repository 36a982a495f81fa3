"""The one configuration of the vLLM integration (defaults documented here, filled from
KVPAGER_* variables by :func:`options_from_env`, or given to ``enable()``)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from ..policy.demand import check_window
from .capacity import DEFAULT_MAX_BLOCKS

__all__ = ["VllmOptions", "options_from_env", "parse_bytes"]

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_bytes(text: str, what: str) -> int:
    """'512M', '2G', '2GiB', '1048576' -> bytes; ValueError naming ``what`` otherwise."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in _UNITS and t[-1:] != "" else ""
    number = t[: -len(unit)] if unit else t
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"{what}: '{text}' is no size (e.g. 512M, 2G, bytes)") from None
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{what}: '{text}' must be a size of 0 or more")
    return int(value * _UNITS[unit])


@dataclass(frozen=True)
class VllmOptions:
    """How vLLM's KV cache is built on kvpager.

    ``layout``: "interleaved" (default: one page holds a run of blocks of every layer, so a
    block costs one mapping) or "per-layer" (a page per layer: needed when the attention
    kernel's block is smaller than vLLM's). KVPAGER_LAYOUT.
    ``instance``: the registry name (KVPAGER_INSTANCE); default vLLM's served model name.
    ``guarantee_bytes``: a guaranteed share of the device budget (KVPAGER_VLLM_GUARANTEE).
    ``limit_bytes``: the instance's limit (None: KVPAGER_LIMIT or none).
    ``handle_bytes``: the page size (None: KVPAGER_HANDLE_SIZE, else ``worker.handle_for_cell``:
    the smallest multiple of 2 MiB that whole blocks tile, or nearly tile holding two or more).
    ``max_blocks``: at most this many blocks of virtual capacity (KVPAGER_VLLM_MAX_BLOCKS,
    default 2**20): vLLM's scheduler keeps a Python object per block.
    ``samples_path``: append one JSON line per ``samples_period_s`` to this file while the cache
    lives: time, the bytes it holds (mapped pages and ready handles), the device's charge and
    budget (KVPAGER_VLLM_SAMPLES=PATH[:SECONDS], default period 0.05 s): memory over time for
    benchmarks and tests.
    ``pool_budget``: pool this engine's share (what stock vLLM would give its KV cache under
    --gpu-memory-utilization) into the device budget; off when KVPAGER_GPU_UTILIZATION sets the
    budget or KVPAGER_VLLM_POOL_BUDGET=0.
    ``warmup_wait_s``: how long the warm-up waits for room to back even one block
    (KVPAGER_VLLM_WARMUP_WAIT_S, default 300 s): engines starting together under a tight budget
    hold it in their own warm-ups, and free it when those end.
    ``pressure_keep_s``: when another instance is refused memory, keep cached blocks worth this
    engine's largest request of the last ``pressure_keep_s`` seconds (policy.RecentDemand), so
    that an engine serving a trickle beside a busy one still has room for its next request;
    0 (default): give the cached blocks up as before (KVPAGER_VLLM_PRESSURE_KEEP_S). Guarantees
    protect more (a claim takes memory back); this keeps one request's worth without them.
    """

    layout: str = "interleaved"
    instance: str | None = None
    guarantee_bytes: int | None = None
    limit_bytes: int | None = None
    handle_bytes: int | None = None
    max_blocks: int = DEFAULT_MAX_BLOCKS
    samples_path: str | None = None
    samples_period_s: float = 0.05
    pool_budget: bool = True
    warmup_wait_s: float = 300.0
    pressure_keep_s: float = 0.0

    def __post_init__(self) -> None:
        if self.layout not in ("interleaved", "per-layer"):
            raise ValueError(f"kvpager: layout '{self.layout}' (choose interleaved or per-layer)")
        if self.max_blocks < 2:
            raise ValueError(f"kvpager: max_blocks must be 2 or more, got {self.max_blocks}")
        if not (math.isfinite(self.warmup_wait_s) and self.warmup_wait_s >= 0):
            raise ValueError(f"kvpager: warmup_wait_s must be 0 or more seconds, got "
                             f"{self.warmup_wait_s}")
        check_window(self.pressure_keep_s, "pressure_keep_s")


def options_from_env(env: Mapping[str, str] = os.environ) -> VllmOptions:
    """VllmOptions from KVPAGER_* variables; ValueError naming the variable on bad values."""
    guarantee = env.get("KVPAGER_VLLM_GUARANTEE")
    handle = env.get("KVPAGER_HANDLE_SIZE")
    max_blocks = env.get("KVPAGER_VLLM_MAX_BLOCKS")
    if max_blocks is not None and not max_blocks.strip().isdigit():
        raise ValueError(f"KVPAGER_VLLM_MAX_BLOCKS: '{max_blocks}' is no block count")
    wait = env.get("KVPAGER_VLLM_WARMUP_WAIT_S")
    try:
        warmup_wait_s = float(wait) if wait else 300.0
    except ValueError:
        raise ValueError(f"KVPAGER_VLLM_WARMUP_WAIT_S: '{wait}' is no number of seconds") from None
    keep = env.get("KVPAGER_VLLM_PRESSURE_KEEP_S")
    try:
        pressure_keep_s = float(keep) if keep else 0.0
    except ValueError:
        raise ValueError(f"KVPAGER_VLLM_PRESSURE_KEEP_S: '{keep}' is no number of "
                         "seconds") from None
    samples = env.get("KVPAGER_VLLM_SAMPLES")
    samples_path, period = None, 0.05
    if samples:
        samples_path, _, seconds = samples.partition(":")
        try:
            period = float(seconds) if seconds else 0.05
        except ValueError:
            period = -1.0
        if not 0.001 <= period <= 60:
            raise ValueError(f"KVPAGER_VLLM_SAMPLES: period '{seconds}' (0.001 to 60 seconds)")
    return VllmOptions(
        layout=env.get("KVPAGER_LAYOUT", "interleaved") or "interleaved",
        instance=env.get("KVPAGER_INSTANCE") or None,
        guarantee_bytes=parse_bytes(guarantee, "KVPAGER_VLLM_GUARANTEE") if guarantee else None,
        handle_bytes=parse_bytes(handle, "KVPAGER_HANDLE_SIZE") if handle else None,
        max_blocks=int(max_blocks) if max_blocks else DEFAULT_MAX_BLOCKS,
        samples_path=samples_path or None,
        samples_period_s=period,
        pool_budget=not env.get("KVPAGER_GPU_UTILIZATION")
        and env.get("KVPAGER_VLLM_POOL_BUDGET", "1") != "0",
        warmup_wait_s=warmup_wait_s,
        pressure_keep_s=pressure_keep_s,
    )
