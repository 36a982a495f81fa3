"""Open-loop request driver: submits a trace at its arrival times, collects per-request latency
and samples the engine's KV memory over time.

Per request: TTFT (submission -> first token), ITL (gaps between tokens), TPOT (mean ITL),
end-to-end latency. Per run: requests completed, wall time, requests/s, output tokens/s.
Times come from transformers' per-token timestamps (time.perf_counter, same clock as ours).
"""

import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional


@dataclass
class RequestResult:
    request_id: str
    submitted: float
    prompt_len: int
    output_len: int
    ttft_s: float
    e2e_s: float
    itl_s: List[float] = field(default_factory=list)
    error: Optional[str] = None

    @property
    def tpot_s(self) -> Optional[float]:
        return statistics.fmean(self.itl_s) if self.itl_s else None


def percentile(values: List[float], q: float) -> Optional[float]:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def _stats(values: List[float]) -> dict:
    if not values:
        return {"n": 0}
    return {"n": len(values), "mean": statistics.fmean(values), "p50": percentile(values, 0.5),
            "p90": percentile(values, 0.9), "p99": percentile(values, 0.99), "max": max(values)}


class MemorySampler:
    """Calls ``probe()`` every ``interval_s`` on a thread; ``samples`` is [(t, value)]."""

    def __init__(self, probe: Callable[[], object], interval_s: float = 0.05, t0: Optional[float] = None):
        self.probe, self.interval_s = probe, interval_s
        self.t0 = time.perf_counter() if t0 is None else t0
        self.samples: List[tuple] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.samples.append((time.perf_counter() - self.t0, self.probe()))
            except Exception as e:  # the probe's owner may be gone at the very end
                self.samples.append((time.perf_counter() - self.t0, f"error: {e}"))
            self._stop.wait(self.interval_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False


def run_trace(engine, trace, *, timeout_s: float = 600.0, t0: Optional[float] = None,
              memory_interval_s: float = 0.05) -> dict:
    """Runs ``trace`` (list of workload.RequestSpec) open-loop on ``engine``; returns
    {"requests": [...], "summary": {...}, "kv_bytes_samples": [(t, bytes)]}. Raises TimeoutError if
    requests are still unfinished ``timeout_s`` after the last arrival."""
    t0 = time.perf_counter() if t0 is None else t0
    submitted: Dict[str, float] = {}
    specs = {r.request_id: r for r in trace}
    results: Dict[str, RequestResult] = {}
    done = threading.Event()
    failures: List[BaseException] = []

    def collect():
        try:
            while len(results) < len(trace):
                out = engine.next_result(timeout=0.1)
                if out is None:
                    if done.is_set() and time.perf_counter() > deadline[0]:
                        return
                    continue
                sent = submitted.get(out.request_id)
                stamps = out.timestamps or []
                if out.error is not None or not stamps or sent is None:
                    results[out.request_id] = RequestResult(
                        out.request_id, sent or 0.0, len(out.prompt_ids), len(out.generated_tokens),
                        float("nan"), float("nan"), [], out.error or "no timestamps")
                    continue
                results[out.request_id] = RequestResult(
                    out.request_id, sent - t0, len(specs[out.request_id].prompt),
                    len(out.generated_tokens), stamps[0] - sent, stamps[-1] - sent,
                    [b - a for a, b in zip(stamps, stamps[1:])])
        except BaseException as e:  # surfaced in the caller
            failures.append(e)

    deadline = [float("inf")]
    collector = threading.Thread(target=collect, daemon=True)
    with MemorySampler(engine.kv_bytes, memory_interval_s, t0) as sampler:
        collector.start()
        for spec in trace:
            delay = t0 + spec.arrival_s - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            submitted[spec.request_id] = time.perf_counter()
            engine.submit(spec.request_id, spec.prompt, spec.max_new_tokens)
        deadline[0] = time.perf_counter() + timeout_s
        done.set()
        collector.join()
        time.sleep(2 * memory_interval_s)
    if failures:
        raise failures[0]
    if len(results) < len(trace):
        raise TimeoutError(f"{len(trace) - len(results)} of {len(trace)} requests unfinished "
                           f"{timeout_s:.0f} s after the last arrival")
    return {"requests": [dict(asdict(r), tpot_s=r.tpot_s) for r in results.values()],
            "summary": summarize(list(results.values())),
            "kv_bytes_samples": sampler.samples}


def summarize(results: List[RequestResult]) -> dict:
    ok = [r for r in results if r.error is None]
    if not ok:
        return {"completed": 0, "failed": len(results)}
    start = min(r.submitted for r in ok)
    end = max(r.submitted + r.e2e_s for r in ok)
    wall = max(end - start, 1e-9)
    out_tokens = sum(r.output_len for r in ok)
    return {
        "completed": len(ok),
        "failed": len(results) - len(ok),
        "wall_s": wall,
        "requests_per_s": len(ok) / wall,
        "output_tokens_per_s": out_tokens / wall,
        "ttft_s": _stats([r.ttft_s for r in ok]),
        "tpot_s": _stats([r.tpot_s for r in ok if r.tpot_s is not None]),
        "itl_s": _stats([x for r in ok for x in r.itl_s]),
        "e2e_s": _stats([r.e2e_s for r in ok]),
    }
