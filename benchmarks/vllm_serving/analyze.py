#!/usr/bin/env python3
"""Pools the runs that run.py appended (OUT/*.jsonl, from any number of GPU calls) into one
summary per benchmark, with plots and markdown tables.

    analyze.py OUT/overhead.jsonl OUT/multimodel.jsonl ... [--json summary.json] [--plots DIR]
               [--markdown tables.md]

* overhead: per rate and system, the mean over runs of throughput (output tokens/s), TTFT mean
  and p99, TPOT mean, with standard errors; each system's change against stock from the runs of
  the same repetition (same trace, same GPU), paired by half: the k-th run of the system with
  stock's k-th (each half of the mirrored order is a whole comparison, A B C then C B A), its
  mean and standard error over those pairs, and whether the 95 % interval lies within +-1 %; for
  kvpager-timed, the time in kvpager's calls as a share of the run.
* multimodel: per model, the p99 TTFT of requests due in that model's own peak phase, pooled
  over repetitions, per system, and the mean TTFT of its other requests (its low load: the
  trickle while the others peak), and that of its requests in the quiet phase (every model at
  the trickle); the ratios kvcached / kvpager (and stock / kvpager,
  kvpager-guarantee / kvpager) of those p99s over requests paired by id (the same trace), with a
  95 % bootstrap interval resampling pairs (benchmarks/serving/pooled.py's method).
* idle footprint (multimodel, prefix): what each engine held at the end of the idle tail:
  kvpager from its registry (mapped bytes, and the bound it must keep: the pages holding live or
  cached blocks, used bytes, plus its reserve of IDLE_PAGES free pages), kvcached from its own segment (used +
  prealloc) and nvidia-smi, stock from nvidia-smi (its KV is static: kv_bytes).
* prefix: per system and model, prefix-cache hit rate (vLLM's prefix_cache_hits /
  prefix_cache_queries over the run), the hits and queries themselves (a request vLLM preempts
  queries its prompt again, so the rate falls with preemptions while the hits stay), vLLM's
  preemptions where recorded, and TTFT.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "serving"))

import driver  # benchmarks/serving: percentile
import pooled  # benchmarks/serving: bootstrap over pairs
import samplers
import tables


def load(paths, leave_out=()) -> list:
    """The runs of ``paths``, less those of each (file, system) in ``leave_out`` (runs known
    invalid, e.g. a harness fault; the file is matched by its name)."""
    drop = {(os.path.basename(f), system) for f, system in leave_out}
    runs = []
    for path in paths:
        with (gzip.open(path, "rt") if path.endswith(".gz") else open(path)) as f:
            runs += [r for r in (json.loads(line) for line in f if line.strip())
                     if (os.path.basename(path), r["system"]) not in drop]
    return runs


def leave_out_arg(text: str) -> tuple:
    """'multimodel-171634.jsonl.gz:kvcached' -> (file name, system)."""
    path, sep, system = text.rpartition(":")
    if not sep or not path or not system:
        raise argparse.ArgumentTypeError(f"--leave-out {text!r}: expected FILE:SYSTEM")
    return os.path.basename(path), system


def _ok(x) -> bool:
    return x is not None and not math.isnan(x)


def mean_se(xs) -> tuple:
    """(mean, standard error of the mean; None below two values)."""
    xs = [x for x in xs if _ok(x)]
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, None
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs))


def _figures(summary: dict) -> dict:
    return {"throughput": summary.get("output_tokens_per_s"),
            "ttft_mean": summary.get("ttft_s", {}).get("mean"), "ttft_p99": summary.get("ttft_s", {}).get("p99"),
            "tpot_mean": summary.get("tpot_s", {}).get("mean")}


def overhead(runs: list, baseline: str = "stock") -> list:
    rows = []
    for rate in sorted({r["rate"] for r in runs}):
        at = sorted((r for r in runs if r["rate"] == rate), key=lambda r: (r["rep"], r["slot"]))
        base_by_rep = {}
        for r in at:
            if r["system"] == baseline:
                base_by_rep.setdefault(r["rep"], []).append(_figures(r["summary"]["llm"]))
        for system in sorted({r["system"] for r in at}, key=lambda s: (s != baseline, s)):
            mine = [r for r in at if r["system"] == system]
            figs = [_figures(r["summary"]["llm"]) for r in mine]
            row = {"rate": rate, "system": system, "runs": len(mine),
                   "reps": sorted({r["rep"] for r in mine}), "completed": sum(r["summary"]["llm"].get("completed", 0) for r in mine),
                   "failed": sum(r["summary"]["llm"].get("failed", 0) for r in mine)}
            for key in ("throughput", "ttft_mean", "ttft_p99", "tpot_mean"):
                row[key], row[key + "_se"] = mean_se([f[key] for f in figs])
            if system != baseline:
                for key in ("throughput", "ttft_mean", "tpot_mean"):
                    changes = []
                    for rep, base in sorted(base_by_rep.items()):
                        own = [_figures(r["summary"]["llm"])[key] for r in mine if r["rep"] == rep]
                        changes += [x / b[key] - 1 for x, b in zip(own, base) if x and b[key]]
                    m, se = mean_se(changes)
                    row[key + "_change"], row[key + "_change_se"], row[key + "_change_pairs"] = m, se, len(changes)
                    if m is not None and se is not None:
                        row[key + "_within_1pct"] = abs(m) + 1.96 * se <= 0.01
            calls = [r.get("kvpager_calls") for r in mine if r.get("kvpager_calls")]
            if calls:
                shares = [_top_level_total(c, "seconds") / r["summary"]["llm"]["wall_s"]
                          for c, r in zip(calls, mine)]
                row["kvpager_calls_share"], row["kvpager_calls_share_se"] = mean_se(shares)
                row["kvpager_calls_per_run"] = mean_se([_top_level_total(c, "calls") for c in calls])[0]
            rows.append(row)
    return rows


def _top_level_total(calls: dict, field: str):
    """Sum of ``field`` over every server's timed methods, leaving out "nested:" entries (calls
    made inside a timed pool method, whose time is already in that method's)."""
    return sum(v[field] for methods in calls.values() for name, v in methods.items()
               if not name.startswith("nested:"))


def own_peak(run: dict, server: str, request: dict) -> bool:
    i = run["servers"].index(server)
    phase = run["config"]["phase_s"]
    return i * phase <= request["due_s"] < (i + 1) * phase


def in_quiet_phase(run: dict, request: dict) -> bool:
    """Due in the quiet phase after the peaks, when every model gets only the trickle: the
    multimodel trace's low load for all three at once."""
    start = len(run["servers"]) * run["config"]["phase_s"]
    return start <= request["due_s"] < start + run["config"]["quiet_s"]


def peak_pairs(runs: list, a: str, b: str) -> dict:
    """{server: [(ttft on a, ttft on b)]} of requests due in the server's own peak phase, paired
    by (repetition, request id) over every repetition that ran both systems."""
    pairs: dict = {}
    by = {}
    for r in runs:
        by.setdefault((r["rep"], r["system"]), []).append(r)
    for (rep, system), ra in sorted(by.items()):
        if system != a or (rep, b) not in by:
            continue
        for run_a, run_b in zip(ra, by[(rep, b)]):
            other = {q["request_id"]: q for q in run_b["requests"]}
            for q in run_a["requests"]:
                o = other.get(q["request_id"])
                if o is None or not own_peak(run_a, q["server"], q):
                    continue
                if _ok(q["ttft_s"]) and _ok(o["ttft_s"]):
                    pairs.setdefault(q["server"], []).append((q["ttft_s"], o["ttft_s"]))
    return pairs


def p99_ratio(pairs) -> float:
    return driver.percentile([x for x, _ in pairs], 0.99) / driver.percentile([y for _, y in pairs], 0.99)


def multimodel(runs: list, reference: str = "kvpager") -> dict:
    systems = sorted({r["system"] for r in runs})
    out = {"p99_peak_ttft": [], "ratios": []}
    for system in systems:
        per_server: dict = {}
        off_peak: dict = {}
        quiet: dict = {}
        for r in runs:
            if r["system"] == system:
                for q in r["requests"]:
                    if in_quiet_phase(r, q) and _ok(q["ttft_s"]):
                        quiet.setdefault(q["server"], []).append(q["ttft_s"])
                    if own_peak(r, q["server"], q) and _ok(q["ttft_s"]):
                        per_server.setdefault(q["server"], []).append(q["ttft_s"])
                    elif own_peak(r, q["server"], q):
                        per_server.setdefault(q["server"] + " failed", []).append(1)
                    elif _ok(q["ttft_s"]):
                        off_peak.setdefault(q["server"], []).append(q["ttft_s"])
        for server, ttfts in sorted(per_server.items()):
            if not server.endswith(" failed"):
                low = off_peak.get(server, [])
                calm = quiet.get(server, [])
                out["p99_peak_ttft"].append({"system": system, "server": server, "requests": len(ttfts),
                                             "failed": len(per_server.get(server + " failed", [])),
                                             "p99_s": driver.percentile(ttfts, 0.99),
                                             "mean_s": sum(ttfts) / len(ttfts),
                                             "off_peak_requests": len(low),
                                             "off_peak_mean_s": sum(low) / len(low) if low else None,
                                             "quiet_requests": len(calm),
                                             "quiet_mean_s": sum(calm) / len(calm) if calm else None})
    for other in systems:
        if other == reference:
            continue
        for server, ps in sorted(peak_pairs(runs, other, reference).items()):
            lo, hi = pooled.bootstrap_interval(ps, rounds=2000, stat=p99_ratio)
            out["ratios"].append({"numerator": other, "denominator": reference, "server": server,
                                  "pairs": len(ps), "reps": len({r["rep"] for r in runs if r["system"] == other}),
                                  "p99_ratio": p99_ratio(ps), "interval_95": [lo, hi],
                                  "mean_ratio": pooled.mean_ratio(ps)})
    return out


# Free mapped pages a kvpager cache keeps when idle (KvCacheConfig::max_idle_pages; the
# benchmarks leave KVPAGER_MAX_IDLE_PAGES unset): the configured reserve of the idle must-show.
IDLE_PAGES = 4


def held_bytes(system: str, server: str, sample: dict, kv_bytes: int, page_bytes=None) -> dict:
    """What one engine holds in one memory sample, by every source there is for its system;
    for kvpager with its page size known, the bound it must keep: the pages holding live or
    cached blocks (the registry's used bytes) plus IDLE_PAGES free ones."""
    out = {"gpu_process": sample.get("gpu", {}).get(server), "bound": None}
    if system.startswith("kvpager"):
        entry = sample.get("registry", {}).get(server) or {}
        out["kv"] = entry.get("mapped")
        if "used" in entry and page_bytes:
            out["bound"] = entry["used"] + IDLE_PAGES * page_bytes
    elif system.startswith("kvcached"):
        seg = sample.get("kvcached", {}).get(server)
        out["kv"] = samplers.kvcached_mapped_bytes(seg) if seg else None
    else:
        out["kv"] = kv_bytes  # static: allocated at start
    return out


def idle_footprint(runs: list) -> list:
    rows = []
    for r in runs:
        samples = [v for _, v in r.get("samples", []) if isinstance(v, dict)]
        if not samples:
            continue
        for server in r["servers"]:
            own = (r.get("kvpager_samples") or {}).get(server) or [{}]  # the engine's own lines
            last = held_bytes(r["system"], server, samples[-1], r["kv_bytes"], own[-1].get("page_bytes"))
            rows.append({"system": r["system"], "rep": r["rep"], "server": server, **last})
    out = []
    for system in sorted({x["system"] for x in rows}):
        for server in sorted({x["server"] for x in rows if x["system"] == system}):
            mine = [x for x in rows if x["system"] == system and x["server"] == server]
            kv, kv_se = mean_se([x["kv"] for x in mine])
            gpu, gpu_se = mean_se([x["gpu_process"] for x in mine])
            bounded = [x for x in mine if x["bound"] is not None and x["kv"] is not None]
            bound, _ = mean_se([x["bound"] for x in bounded])
            out.append({"system": system, "server": server, "runs": len(mine), "idle_kv_bytes": kv,
                        "idle_kv_bytes_se": kv_se, "idle_gpu_process_bytes": gpu, "idle_gpu_process_bytes_se": gpu_se,
                        # kvpager: the must-show's bound, and whether every run held no more
                        "idle_bound_bytes": bound if bounded else None,
                        "within_bound": all(x["kv"] <= x["bound"] for x in bounded) if bounded else None})
    return out


def _growth(before: dict, after: dict, counter: str) -> float:
    """How much a /metrics counter grew over a run (0 where it was not exported)."""
    return after.get(counter, 0) - before.get(counter, 0)


def prefix(runs: list) -> list:
    out = []
    for system in sorted({r["system"] for r in runs}):
        for server in sorted({s for r in runs if r["system"] == system for s in r["servers"]}):
            hits = queries = 0.0
            preemptions = None  # counted only by runs that recorded vLLM's counter
            ttfts = []
            for r in runs:
                if r["system"] != system:
                    continue
                before, after = r["metrics_before"].get(server, {}), r["metrics_after"].get(server, {})
                hits += _growth(before, after, "vllm:prefix_cache_hits_total")
                queries += _growth(before, after, "vllm:prefix_cache_queries_total")
                if "vllm:num_preemptions_total" in after:
                    preemptions = (preemptions or 0) + _growth(before, after, "vllm:num_preemptions_total")
                ttfts += [q["ttft_s"] for q in r["requests"] if q["server"] == server and _ok(q["ttft_s"])]
            out.append({"system": system, "server": server, "hit_rate": hits / queries if queries else None,
                        "hits": hits, "queries": queries, "preemptions": preemptions,
                        "ttft_mean_s": sum(ttfts) / len(ttfts) if ttfts else None,
                        "ttft_p99_s": driver.percentile(ttfts, 0.99)})
    return out


def make_plots(by_bench: dict, folder: str) -> list:
    try:
        import plots  # benchmarks/serving (matplotlib)

        plots._plt()
    except ImportError as e:
        print(f"plots skipped: matplotlib is not importable ({e})")
        return []
    made = []
    for rate in sorted({r["rate"] for r in by_bench.get("overhead", [])}):
        series: dict = {}
        for r in by_bench["overhead"]:
            if r["rate"] == rate:
                series.setdefault(r["system"], []).extend(q["ttft_s"] for q in r["requests"])
        made.append(plots.latency_cdfs(os.path.join(folder, f"overhead_ttft_rate{rate:g}.png"), series, "TTFT",
                                       f"{by_bench['overhead'][0]['model']}, {rate:g} req/s"))
    for bench in ("multimodel", "prefix"):
        for r in by_bench.get(bench, []):
            series = {}
            for server in r["servers"]:
                series[server] = [(t, held_bytes(r["system"], server, v, r["kv_bytes"])["kv"])
                                  for t, v in r["samples"] if isinstance(v, dict)]
            made.append(plots.memory_over_time(os.path.join(folder, f"{bench}_memory_{r['system']}_rep{r['rep']}_slot{r['slot']}.png"),
                                               series, f"{bench}: {r['system']}", r["budget_bytes"]))
    return made


def _meta_field(run: dict, key: str):
    value = run["meta"].get(key)
    if key == "vllm" and value:  # runs before the fix recorded vLLM's import warnings too
        value = value.splitlines()[-1]
    return value


def summarize(runs: list) -> tuple:
    """(summary, runs by benchmark)."""
    by_bench: dict = {}
    for r in runs:
        by_bench.setdefault(r["bench"], []).append(r)
    out = {"runs": {b: len(rs) for b, rs in by_bench.items()},
           "meta": sorted({json.dumps({k: _meta_field(r, k) for k in ("device", "gpu_uuid", "commit", "vllm")})
                           for r in runs})}
    out["meta"] = [json.loads(m) for m in out["meta"]]
    if "overhead" in by_bench:
        out["overhead"] = overhead(by_bench["overhead"])
    if "multimodel" in by_bench:
        out["multimodel"] = multimodel(by_bench["multimodel"])
    idle_runs = by_bench.get("multimodel", []) + by_bench.get("prefix", [])
    if idle_runs:
        out["idle"] = idle_footprint(idle_runs)
    if "prefix" in by_bench:
        out["prefix"] = prefix(by_bench["prefix"])
    fingerprints = {}
    for r in runs:
        fingerprints.setdefault((r["bench"], r["rep"], r.get("rate")), set()).add(r["trace"])
    out["trace_mismatches"] = [list(k) for k, v in fingerprints.items() if len(v) > 1]
    return out, by_bench


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="run.py's .jsonl files (or .jsonl.gz)")
    p.add_argument("--json", help="write the summary here")
    p.add_argument("--plots", help="PNG folder")
    p.add_argument("--markdown", help="write the markdown tables here")
    p.add_argument("--leave-out", action="append", type=leave_out_arg, default=[], metavar="FILE:SYSTEM",
                   help="leave out SYSTEM's runs in the results file FILE (runs known invalid; repeatable)")
    args = p.parse_args(argv)
    summary, by_bench = summarize(load(args.results, args.leave_out))
    if summary["trace_mismatches"]:
        print(f"WARNING: systems saw different traces in {summary['trace_mismatches']}", file=sys.stderr)
    if args.plots:
        summary["plots"] = make_plots(by_bench, args.plots)
    text = tables.all_tables(summary)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
