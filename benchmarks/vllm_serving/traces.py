"""The traces of the vLLM serving benchmarks, from benchmarks/serving/workload.py, as jobs
[(server name, workload.RequestSpec)] for loadgen.run_open_loop.

A trace depends only on its arguments and seed, never on the system that serves it, so every
system of a repetition sees the same requests at the same times; ``fingerprint`` is what the
results record to prove it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "serving"))

import workload  # benchmarks/serving: arrivals, lengths, prompts


def trace_seed(seed: int, rep: int, index: int = 0) -> int:
    """One seed per (benchmark seed, repetition, model index)."""
    return seed * 1_000_003 + rep * 1009 + index


def poisson_jobs(server: str, rate: float, duration_s: float, input_len, output_len, vocab: int,
                 seed: int) -> list:
    arrivals = workload.poisson_arrivals(rate, duration_s, random.Random(seed))
    trace = workload.make_trace(arrivals, input_len, output_len, vocab, seed, prefix=f"{server}-r{rate:g}")
    return [(server, r) for r in trace]


def staggered_jobs(servers: list, vocabs: list, *, phase_s: float, peak_rate: float,
                   low_rate: float, quiet_s: float, input_len, output_len, seed: int,
                   shared_prefix: tuple | None = None) -> list:
    """Server i peaks in phase i, trickles otherwise, then all trickle for ``quiet_s``.
    ``shared_prefix`` = (groups, prefix tokens): prompts start with one of a few prefixes."""
    jobs = []
    for i, (server, vocab) in enumerate(zip(servers, vocabs)):
        s = seed + i
        arrivals = workload.staggered_arrivals(i, len(servers), phase_s, peak_rate, low_rate, quiet_s,
                                               random.Random(s))
        trace = workload.make_trace(arrivals, input_len, output_len, vocab, s, prefix=server)
        if shared_prefix:
            groups, length = shared_prefix
            trace = workload.with_shared_prefixes(trace, groups, length, vocab, s + 7)
        jobs += [(server, r) for r in trace]
    return sorted(jobs, key=lambda j: j[1].arrival_s)


def fingerprint(jobs: list) -> str:
    """sha256 (first 16 hex digits) of the jobs: servers, ids, arrivals, prompts, lengths."""
    h = hashlib.sha256()
    for server, r in jobs:
        h.update(json.dumps([server, r.request_id, round(r.arrival_s, 9), r.prompt,
                             r.max_new_tokens]).encode())
    return h.hexdigest()[:16]
