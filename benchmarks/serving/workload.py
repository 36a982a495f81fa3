"""Request traces: open-loop arrival times and input/output lengths, seeded and reproducible.

A trace is a list of ``RequestSpec`` (arrival second from the start, prompt token ids, output
length). Arrivals are Poisson at a rate, or a piecewise-constant-rate "ramp" (kvcached's
latency-benefit benchmark: 0 -> peak -> low), or a burst of n at once. Lengths are fixed or
uniform in [lo, hi]. Prompt ids are uniform random tokens (models have random weights, so the
content does not matter; the lengths do).
"""

import random
from dataclasses import asdict, dataclass
from typing import List, Sequence, Tuple


@dataclass
class RequestSpec:
    request_id: str
    arrival_s: float
    prompt: List[int]
    max_new_tokens: int

    def to_json(self) -> dict:
        return asdict(self)


def _length(rng: random.Random, spec) -> int:
    if isinstance(spec, (tuple, list)):
        lo, hi = spec
        return rng.randint(int(lo), int(hi))
    return int(spec)


def poisson_arrivals(rate: float, duration_s: float, rng: random.Random, start: float = 0.0) -> List[float]:
    """Arrival times of a Poisson process of ``rate`` requests/s over [start, start + duration)."""
    if rate <= 0:
        return []
    times, t = [], start
    while True:
        t += rng.expovariate(rate)
        if t >= start + duration_s:
            return times
        times.append(t)


def ramp_arrivals(phases: Sequence[Tuple[float, float]], rng: random.Random, start: float = 0.0) -> List[float]:
    """Poisson arrivals through consecutive phases of (duration_s, rate)."""
    times, t = [], start
    for duration, rate in phases:
        times += poisson_arrivals(rate, duration, rng, t)
        t += duration
    return times


def staggered_arrivals(index: int, count: int, phase_s: float, peak_rate: float, low_rate: float,
                       quiet_s: float, rng: random.Random) -> list:
    """Model ``index`` of ``count`` sharing a machine: its peak rate in phase ``index`` (of
    ``phase_s`` seconds each), the low rate in the others' phases, then the low rate for
    ``quiet_s`` more seconds, when no model peaks (low load)."""
    phases = [(phase_s, peak_rate if i == index else low_rate) for i in range(count)]
    phases.append((quiet_s, low_rate))
    return ramp_arrivals(phases, rng)


def with_shared_prefixes(trace: Sequence[RequestSpec], groups: int, prefix_len: int, vocab_size: int,
                         seed: int) -> list:
    """``trace`` with the first ``prefix_len`` prompt tokens of each request replaced by one of
    ``groups`` shared prefixes (a system prompt or few-shot block; drawn per request, seeded), so
    an engine's prefix cache can hit. Prompts shorter than the prefix become the prefix."""
    rng = random.Random(seed)
    prefixes = [[rng.randrange(10, vocab_size) for _ in range(prefix_len)] for _ in range(groups)]
    out = []
    for r in trace:
        prefix = prefixes[rng.randrange(groups)]
        out.append(RequestSpec(r.request_id, r.arrival_s, prefix + r.prompt[prefix_len:], r.max_new_tokens))
    return out


def make_trace(arrivals: Sequence[float], input_len, output_len, vocab_size: int, seed: int,
               prefix: str = "req") -> List[RequestSpec]:
    """Requests at ``arrivals`` with lengths drawn from ``input_len``/``output_len`` (an int or
    an inclusive (lo, hi) range) and random prompt ids in [10, vocab_size)."""
    rng = random.Random(seed)
    trace = []
    for i, t in enumerate(sorted(arrivals)):
        n_in = _length(rng, input_len)
        prompt = [rng.randrange(10, vocab_size) for _ in range(n_in)]
        trace.append(RequestSpec(f"{prefix}-{i}", float(t), prompt, _length(rng, output_len)))
    return trace
