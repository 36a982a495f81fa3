"""kvpager's figures on ``vllm serve``'s Prometheus ``/metrics``, beside vLLM's own.

vLLM's API server serves ``/metrics`` from prometheus_client's default registry, in its own
process; the KV cache lives in the engine-core process. The figures therefore come from the
shared registry, which both can read (the same numbers as ``kvpager list --json``):
:class:`RegistryCollector` reads it at each scrape (nothing is computed between scrapes, and a
scrape is never stale), for the engine's instance and its device:

    kvpager:mapped_bytes, kvpager:used_bytes, kvpager:reserved_bytes   physical memory held,
        holding blocks in use, held but free (cached prefix blocks, free pages, ready handles)
    kvpager:limit_bytes (+Inf: none), kvpager:guarantee_bytes, kvpager:claim_bytes
        (what a live guarantee claim asks to reach; 0: none)
    kvpager:evicted_blocks_total   cached blocks given up under pressure
    kvpager:device_budget_bytes, kvpager:device_charged_bytes   the device's budget and the
        charge of every engine on it
    kvpager:instance_alive   1 while the engine's registry entry is alive

each labelled ``model_name`` (vLLM's served model name, as its own metrics are) and
``instance`` (the registry name).

vLLM loads stat loggers from its ``vllm.stat_logger_plugins`` entry points; an entry point of
kvpager's would be loaded with KVPAGER_VLLM unset too, and its presence alone turns vLLM's
stats on under ``--disable-log-stats``. So :func:`enable` adds :func:`stat_logger_class` to
what vLLM's plugin loader returns instead, only while the integration is on.

Limit: with ``--api-server-count`` above 1 vLLM serves ``/metrics`` from its multiprocess
collector, which does not call custom collectors; the figures are then missing there
(``kvpager list --json`` has them).

Thread safety: prometheus_client calls ``collect`` from its HTTP handler threads; it reads
shared memory only.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from typing import Any

from ... import _kvpager

logger = logging.getLogger("vllm.kvpager")

_INSTANCE_GAUGES = (  # (metric, registry field, help)
    ("kvpager:mapped_bytes", "mapped_bytes", "Physical KV memory this engine holds."),
    ("kvpager:used_bytes", "used_bytes", "Physical KV memory holding blocks in use."),
    ("kvpager:reserved_bytes", "reserved_bytes",
     "Physical KV memory held but not in use: cached prefix blocks, free pages, ready handles."),
    ("kvpager:guarantee_bytes", "guarantee_bytes", "This engine's guaranteed share."),
    ("kvpager:claim_bytes", "claim_target_bytes",
     "The charge a live guarantee claim asks to reach (0: no claim)."),
)


def instance_samples(snapshot: dict, instance: str) -> dict[str, float] | None:
    """The metric values for ``instance`` from a registry_snapshot(); None when the registry has
    no entry of that name. Pure."""
    record = next((i for i in snapshot["instances"] if i["name"] == instance), None)
    if record is None:
        return None
    out = {metric: float(record[field]) for metric, field, _ in _INSTANCE_GAUGES}
    limit = record["limit_bytes"]
    out["kvpager:limit_bytes"] = math.inf if limit is None else float(limit)
    out["kvpager:evicted_blocks_total"] = float(record["evicted_blocks"])
    out["kvpager:instance_alive"] = 1.0 if record["alive"] else 0.0
    device = next((d for d in snapshot["devices"] if d["device"] == record["device"]), None)
    if device is not None:
        out["kvpager:device_budget_bytes"] = float(device["budget_bytes"])
        out["kvpager:device_charged_bytes"] = float(device["charged_bytes"])
    return out


_HELP = {m: h for m, _, h in _INSTANCE_GAUGES} | {
    "kvpager:limit_bytes": "This engine's limit (kvpager limit); +Inf: none.",
    "kvpager:evicted_blocks_total": "Cached blocks this engine gave up under memory pressure.",
    "kvpager:instance_alive": "1 while this engine's registry entry is alive.",
    "kvpager:device_budget_bytes": "The device budget every engine on the device shares.",
    "kvpager:device_charged_bytes": "What every engine on the device holds.",
}


class RegistryCollector:
    """A prometheus_client collector of one instance's registry figures (read at scrape)."""

    def __init__(self, instance: str, model_name: str, prefix: str = "") -> None:
        self.instance, self.model_name, self.prefix = instance, model_name, prefix

    def describe(self):  # no samples at registration (the registry may not have it yet)
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        try:
            values = instance_samples(_kvpager.registry_snapshot(self.prefix), self.instance)
        except Exception as e:  # noqa: BLE001 - a scrape must not fail for vLLM's metrics
            logger.warning("kvpager: cannot read the registry for /metrics: %s", e)
            return
        if values is None:
            return
        labels = ["model_name", "instance"]
        for metric, value in values.items():
            if metric.endswith("_total"):
                family = CounterMetricFamily(metric[: -len("_total")], _HELP[metric],
                                             labels=labels)
            else:
                family = GaugeMetricFamily(metric, _HELP[metric], labels=labels)
            family.add_metric([self.model_name, self.instance], value)
            yield family


_registered: dict[str, RegistryCollector] = {}
_registered_lock = threading.Lock()


def register_collector(instance: str, model_name: str, registry: Any = None) -> RegistryCollector:
    """Registers (once per instance and process) the collector with prometheus_client's default
    registry, or ``registry``."""
    from prometheus_client import REGISTRY

    with _registered_lock:
        collector = _registered.get(instance)
        if collector is None:
            collector = RegistryCollector(instance, model_name)
            (registry or REGISTRY).register(collector)
            _registered[instance] = collector
        return collector


def unregister_collectors() -> None:
    from prometheus_client import REGISTRY

    with _registered_lock:
        for collector in _registered.values():
            with contextlib.suppress(KeyError):
                REGISTRY.unregister(collector)
        _registered.clear()


def stat_logger_class(instance_of):
    """vLLM's StatLoggerBase subclass that registers the collector for the engine it is built
    for; ``instance_of(vllm_config)`` gives the engine's registry name."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class KvpagerStatLogger(StatLoggerBase):
        def __init__(self, vllm_config, engine_index: int = 0) -> None:
            model = vllm_config.model_config
            name = instance_of(vllm_config)
            served = model.served_model_name
            if isinstance(served, (list, tuple)):
                served = served[0] if served else None
            register_collector(name, str(served or model.model))

        def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx=0):
            pass  # the collector reads the registry at scrape time

        def log_engine_initialized(self) -> None:
            pass

    return KvpagerStatLogger


def plugin_factories(original, logger_class):
    """Wraps vLLM's ``load_stat_logger_plugin_factories``: its plugins, then kvpager's."""

    def load_stat_logger_plugin_factories():
        return [*original(), logger_class]

    return load_stat_logger_plugin_factories
