#!/usr/bin/env python3
"""Does mapping and unmapping KV pages in one process slow another process's kernels?

Several engines on one GPU: while one maps and unmaps pages (cuMemCreate/Map/SetAccess,
cuMemUnmap/Release through kvpager), another runs its forward passes. If page-table updates
stall the whole device, elastic memory costs the *other* models latency. This measures it:

  * this process runs a fixed stand-in for a forward pass, timed with CUDA events:
      big:   a chain of 8192x8192 bf16 matmuls (prefill-like, ~6 ms)
      small: 64 launches of 1024x1024 matmuls (decode-like, launch-bound, ~1 ms)
  * a child process ("churn") holds a kvpager KvCache on the same GPU and, RATE times a second,
    allocates blocks worth PAGES pages (mapped at once: no reserve) and trims them (unmapped
    and released at once); rate 0 is the baseline without a child.

    python3 benchmarks/serving/vmm_interference.py --rates 0 20 100 max --json out.json

Reports per rate and pass kind: pass time mean/p50/p99 and the ratio to the baseline, and the
maps and unmaps the child achieved per second.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def _percentile(values, q):
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def churn(args):
    """Child: map and unmap pages at args.rate cycles/s until the stop file appears."""
    import kvpager

    kv = kvpager.KvCache(num_layers=args.layers, kv_heads=8, head_dim=64, dtype="bfloat16",
                         block_size=32, num_blocks=8192, layout=args.layout, reserve_pages=0,
                         max_idle_pages=0, device=args.device)
    per_page = kv.stats()["max_blocks_per_page"]
    open(args.ready, "w").write(json.dumps({"page_bytes": kv.stats()["page_bytes"]}))
    period = 0.0 if args.rate == "max" else 1.0 / float(args.rate)
    cycles, start = 0, time.perf_counter()
    next_at = start
    while not os.path.exists(args.stop):
        ids = kv.alloc(args.pages * per_page)
        kv.free(ids)
        kv.trim()
        cycles += 1
        if period:
            next_at += period
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
    elapsed = time.perf_counter() - start
    st = kv.stats()
    with open(args.result, "w") as f:
        json.dump({"cycles_per_s": cycles / elapsed, "maps_per_s": st["pages_mapped_total"] / elapsed,
                   "unmaps_per_s": st["pages_unmapped_total"] / elapsed,
                   "page_bytes": st["page_bytes"]}, f)
    return 0


def _passes(kind, seconds):
    """Times `kind` passes for `seconds`; returns their durations in ms."""
    import torch

    if kind == "big":
        x = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        body = lambda: [x @ x for _ in range(4)]  # noqa: E731
    else:
        x = torch.randn(1024, 1024, device="cuda", dtype=torch.bfloat16)
        body = lambda: [x @ x for _ in range(64)]  # noqa: E731
    for _ in range(5):
        body()
    torch.cuda.synchronize()
    times, end_at = [], time.perf_counter() + seconds
    begin, done = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    while time.perf_counter() < end_at:
        begin.record()
        body()
        done.record()
        done.synchronize()
        times.append(begin.elapsed_time(done))
    return times


def measure(args):
    rows = []
    baseline = {}
    with tempfile.TemporaryDirectory(prefix="kvpager-vmmint-") as tmp:
        for rate in args.rates:
            child, churned = None, {}
            if rate != "0":
                paths = {k: os.path.join(tmp, f"{k}-{rate}") for k in ("ready", "stop", "result")}
                child = subprocess.Popen([sys.executable, __file__, "churn", "--rate", rate,
                                          "--pages", str(args.pages), "--layers", str(args.layers),
                                          "--layout", args.layout, "--ready", paths["ready"],
                                          "--stop", paths["stop"], "--result", paths["result"]])
                while not os.path.exists(paths["ready"]):
                    if child.poll() is not None:
                        raise RuntimeError(f"churn child exited with {child.returncode}")
                    time.sleep(0.01)
                time.sleep(0.5)
            try:
                for kind in args.kinds:
                    t = _passes(kind, args.seconds)
                    row = {"rate": rate, "kind": kind, "passes": len(t), "mean_ms": statistics.fmean(t),
                           "p50_ms": _percentile(t, 0.5), "p99_ms": _percentile(t, 0.99), "max_ms": max(t)}
                    if rate == "0":
                        baseline[kind] = row
                    rows.append(row)
            finally:
                if child is not None:
                    open(paths["stop"], "w").close()
                    if child.wait(timeout=60) != 0:
                        raise RuntimeError(f"churn child exited with {child.returncode}")
                    churned = json.load(open(paths["result"]))
            for row in rows:
                if row["rate"] == rate:
                    row.update(churned)
    for row in rows:
        base = baseline.get(row["kind"])
        if base:
            for key in ("mean_ms", "p50_ms", "p99_ms"):
                row[key.replace("_ms", "_ratio")] = row[key] / base[key]
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd")
    c = sub.add_parser("churn")
    c.add_argument("--rate", required=True)
    c.add_argument("--pages", type=int, default=2)
    c.add_argument("--layers", type=int, default=16)
    c.add_argument("--layout", default="interleaved")
    c.add_argument("--device", default="cuda:0")
    for name in ("ready", "stop", "result"):
        c.add_argument(f"--{name}", required=True)
    p.add_argument("--rates", nargs="+", default=["0", "20", "100", "max"],
                   help="map+unmap cycles per second of the churn process (0: none; max)")
    p.add_argument("--pages", type=int, default=2, help="pages mapped and unmapped per cycle")
    p.add_argument("--layers", type=int, default=16, help="Llama-3.2-1B: 16 layers, 8x64 KV heads")
    p.add_argument("--layout", default="interleaved", choices=["interleaved", "per-layer"])
    p.add_argument("--kinds", nargs="+", default=["big", "small"], choices=["big", "small"])
    p.add_argument("--seconds", type=float, default=4.0, help="per rate and kind")
    p.add_argument("--json")
    args = p.parse_args(argv)
    if args.cmd == "churn":
        return churn(args)
    if args.rates[0] != "0":
        args.rates = ["0"] + args.rates
    rows = measure(args)
    print(f"{'rate':>5} {'kind':>5} {'passes':>6} {'p50 ms':>8} {'p99 ms':>8} {'p50 x':>6} {'p99 x':>6}"
          f" {'maps/s':>8} {'unmaps/s':>8}")
    for r in rows:
        print(f"{r['rate']:>5} {r['kind']:>5} {r['passes']:>6} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f}"
              f" {r.get('p50_ratio', 1):6.3f} {r.get('p99_ratio', 1):6.3f}"
              f" {r.get('maps_per_s', 0):8.0f} {r.get('unmaps_per_s', 0):8.0f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": {k: v for k, v in vars(args).items() if k != "cmd"}, "rows": rows}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
