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
