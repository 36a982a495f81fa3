#!/usr/bin/env python3
"""Pools the requests of several `bench.py multimodel` runs (their --json files) and compares
TTFT per model and load, request by request: every run serves the same trace on each memory, so a
request's TTFT on the baseline and on kvpager form a pair.

    python3 benchmarks/serving/pooled.py run1.json run2.json ... [--baseline stock|stock-whole]

For each model and each kind of time ("peak": its own peak phase; "others": the other models'
peak phases; "low": the quiet phase, when no model peaks) it prints the number of pairs, the ratio
of mean TTFTs baseline / kvpager (above 1: kvpager is faster) with a 95 % bootstrap interval
(resampling pairs), and the geometric mean of the per-request ratios. One run holds few low-load
requests per model and a single TTFT varies by tens of percent between identical runs, so a ratio
from one run says little; pooled pairs say how much of it is noise.
"""

import argparse
import json
import math
import random
import sys


def phase_of(submitted, index, count, phase_s):
    if submitted >= count * phase_s:
        return "low"
    return "peak" if index * phase_s <= submitted < (index + 1) * phase_s else "others"


def pairs_by_model_and_phase(reports, baseline):
    """{(model, phase): [(baseline ttft, kvpager ttft)]} over every run that has both memories."""
    pairs = {}
    for report in reports:
        runs = report["runs"]
        if baseline not in runs or "kvpager" not in runs:
            continue
        phase_s, count = report["config"]["phase_s"], len(runs["kvpager"])
        for index, (base, kv) in enumerate(zip(runs[baseline], runs["kvpager"])):
            kv_by_id = {r["request_id"]: r for r in kv["requests"]}
            for r in base["requests"]:
                other = kv_by_id.get(r["request_id"])
                if other is None or not (r["ttft_s"] > 0 and other["ttft_s"] > 0):
                    continue  # failed on one side: not a pair
                key = (base["model"], phase_of(r["submitted"], index, count, phase_s))
                pairs.setdefault(key, []).append((r["ttft_s"], other["ttft_s"]))
    return pairs


def mean_ratio(pairs):
    return sum(b for b, _ in pairs) / sum(k for _, k in pairs)


def bootstrap_interval(pairs, rounds=4000, seed=0, stat=mean_ratio):
    """95 % interval of ``stat`` (default: the ratio of means) over pairs resampled with
    replacement."""
    rng = random.Random(seed)
    stats = sorted(stat([pairs[rng.randrange(len(pairs))] for _ in pairs]) for _ in range(rounds))
    return stats[int(0.025 * rounds)], stats[int(0.975 * rounds) - 1]


def summarize(pairs):
    rows = []
    for (model, phase), ps in sorted(pairs.items()):
        lo, hi = bootstrap_interval(ps)
        rows.append({"model": model, "phase": phase, "pairs": len(ps), "mean_ratio": mean_ratio(ps),
                     "interval_95": [lo, hi],
                     "geomean_ratio": math.exp(sum(math.log(b / k) for b, k in ps) / len(ps))})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reports", nargs="+", help="multimodel --json files")
    p.add_argument("--baseline", default="stock", choices=["stock", "stock-whole"])
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)
    reports = [json.load(open(f)) for f in args.reports]
    rows = summarize(pairs_by_model_and_phase(reports, args.baseline))
    if not rows:
        print(f"no run in these files has both {args.baseline} and kvpager", file=sys.stderr)
        return 1
    print(f"{len(reports)} runs; TTFT {args.baseline} / kvpager over paired requests (>1: kvpager faster)")
    print(f"{'model':<14} {'phase':<7} {'pairs':>5} {'mean ratio':>10} {'95% interval':>14} {'geomean':>8}")
    for r in rows:
        lo, hi = r["interval_95"]
        print(f"{r['model']:<14} {r['phase']:<7} {r['pairs']:>5} {r['mean_ratio']:>10.2f} "
              f"{lo:>6.2f} - {hi:<5.2f} {r['geomean_ratio']:>8.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"baseline": args.baseline, "files": args.reports, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
