"""benchmarks/vllm_serving/analyze.py and tables.py on synthetic runs with known answers: paired
changes against stock with standard errors, the pooled p99 TTFT ratio at each model's peak and
its bootstrap interval, the idle footprint per system, prefix-cache hit rates. Pure Python (CI)."""

import math
import os
import sys

import pytest

SOURCE_DIR = os.environ.get("KVPAGER_SOURCE_DIR",
                            os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(SOURCE_DIR, "benchmarks", "vllm_serving"))

import analyze  # noqa: E402 - after the sys.path insert above
import tables  # noqa: E402 - after the sys.path insert above


def _overhead_run(system, rep, tput, ttft=0.1, tpot=0.01, rate=4.0, calls=None):
    summary = {"completed": 10, "failed": 0, "wall_s": 10.0, "output_tokens_per_s": tput,
               "ttft_s": {"mean": ttft, "p99": 2 * ttft}, "tpot_s": {"mean": tpot}}
    return {"bench": "overhead", "rep": rep, "slot": 0, "system": system, "rate": rate,
            "model": "m", "trace": f"t{rep}", "summary": {"llm": summary}, "requests": [],
            "kvpager_calls": calls,
            "meta": {"device": "GPU", "gpu_uuid": "u", "commit": "c", "vllm": "0.26.0"}}


def test_overhead_changes_are_paired_per_half_repetition_with_standard_errors():
    runs = []
    # stock drifts between repetitions and between the halves of one (A B, then B A);
    # kvpager is 1 % slower than the stock run of its own half: every pair sees exactly that
    for rep, (first, second, change) in enumerate([(1000, 1100, -0.01), (1200, 1150, -0.012),
                                                   (900, 950, -0.008)]):
        slots = [("stock", first), ("kvpager", first * (1 + change)),
                 ("kvpager", second * (1 + change)), ("stock", second)]
        runs += [dict(_overhead_run(system, rep, tput), slot=k)
                 for k, (system, tput) in enumerate(slots)]
    runs.reverse()  # the pairs follow the slots, not the order of the files
    rows = {r["system"]: r for r in analyze.overhead(runs)}
    k = rows["kvpager"]
    changes = [-0.01, -0.01, -0.012, -0.012, -0.008, -0.008]
    assert k["throughput_change"] == pytest.approx(-0.01)
    var = sum((c + 0.01) ** 2 for c in changes) / (len(changes) - 1)
    assert k["throughput_change_se"] == pytest.approx(math.sqrt(var / len(changes)))
    assert k["throughput_change_pairs"] == 6
    assert k["throughput_within_1pct"] is False
    assert rows["stock"]["throughput"] == pytest.approx((1000 + 1100 + 1200 + 1150 + 900 + 950) / 6)
    assert rows["stock"]["runs"] == 6


def test_time_in_kvpager_calls_is_a_share_of_the_run():
    calls = {"llm-kvpager-timed": {"alloc": {"calls": 100, "seconds": 0.02},
                                   "free": {"calls": 100, "seconds": 0.03},
                                   # inside a timed pool method: already in that one's time
                                   "nested:available": {"calls": 7, "seconds": 0.5}}}
    rows = analyze.overhead([_overhead_run("stock", 0, 1000),
                             _overhead_run("kvpager-timed", 0, 990, calls=calls)])
    timed = next(r for r in rows if r["system"] == "kvpager-timed")
    assert timed["kvpager_calls_share"] == pytest.approx(0.05 / 10.0)
    assert timed["kvpager_calls_per_run"] == 200


def _mm_run(system, rep, ttfts_by_server, phase_s=10.0, samples=None):
    """ttfts_by_server: {server: [(due_s, ttft)]}."""
    requests = [{"request_id": f"{s}-{i}", "server": s, "due_s": due, "ttft_s": ttft}
                for s, reqs in ttfts_by_server.items() for i, (due, ttft) in enumerate(reqs)]
    return {"bench": "multimodel", "rep": rep, "slot": 0, "system": system,
            "servers": list(ttfts_by_server), "config": {"phase_s": phase_s, "quiet_s": 4.0},
            "requests": requests,
            "kv_bytes": 1 << 30, "budget_bytes": 3 << 30, "trace": f"t{rep}",
            "samples": samples or [], "meta": {}}


def test_p99_ratio_at_each_models_peak_is_pooled_over_repetitions_with_a_bootstrap_interval():
    # server a peaks in [0, 10), b in [10, 20). kvcached's TTFTs are exactly twice kvpager's at
    # a's peak, so every resample's p99 ratio is 2; outside the peak they are not counted.
    runs = []
    for rep in range(3):
        a = [(i * 0.1, 0.01 * (i + 1)) for i in range(100)] + [(15.0, 5.0), (21.0, 0.5)]
        b = [(10 + i * 0.1, 0.02) for i in range(50)]
        runs.append(_mm_run("kvpager", rep, {"a": a, "b": b}))
        slower = [(d, 2 * t) if d < 10 else (d, 0.001) for d, t in a]
        runs.append(_mm_run("kvcached", rep, {"a": slower, "b": [(d, 3 * t) for d, t in b]}))
    out = analyze.multimodel(runs)
    ratios = {(r["numerator"], r["server"]): r for r in out["ratios"]}
    ra = ratios[("kvcached", "a")]
    assert ra["pairs"] == 300 and ra["reps"] == 3
    assert ra["p99_ratio"] == pytest.approx(2.0)
    assert ra["interval_95"] == pytest.approx([2.0, 2.0])
    assert ratios[("kvcached", "b")]["p99_ratio"] == pytest.approx(3.0)
    p99 = {(r["system"], r["server"]): r for r in out["p99_peak_ttft"]}
    assert p99[("kvpager", "a")]["requests"] == 300  # the request at 15 s is not in a's peak
    assert p99[("kvpager", "a")]["p99_s"] == pytest.approx(0.99, abs=0.011)
    assert p99[("kvpager", "a")]["off_peak_requests"] == 6  # a's trickle: two requests a rep
    assert p99[("kvpager", "a")]["off_peak_mean_s"] == pytest.approx(2.75)
    assert p99[("kvcached", "a")]["off_peak_mean_s"] == pytest.approx(0.001)
    # the quiet phase [20, 24) after both peaks: only the request at 21 s
    assert p99[("kvpager", "a")]["quiet_requests"] == 3
    assert p99[("kvpager", "a")]["quiet_mean_s"] == pytest.approx(0.5)
    assert p99[("kvpager", "b")]["quiet_requests"] == 0


def test_bootstrap_interval_covers_the_spread_of_noisy_pairs():
    import random

    rng = random.Random(1)
    pairs = [(x * 1.5, x) for x in (rng.uniform(0.1, 1.0) for _ in range(400))]
    noisy = [(b * rng.uniform(0.8, 1.2), k) for b, k in pairs]
    lo, hi = analyze.pooled.bootstrap_interval(noisy, rounds=500, stat=analyze.p99_ratio)
    assert lo < analyze.p99_ratio(noisy) < hi
    assert lo > 1.2 and hi < 1.9


def test_idle_footprint_reads_each_systems_own_source():
    sample = {"gpu": {"a": 5 << 30}, "registry": {"a": {"mapped": 64 << 20}},
              "kvcached": {"a": {"used": 1 << 20, "prealloc": 2 << 20, "total": 0}}}
    samples = [[1.0, {}], [30.0, sample]]
    runs = [dict(_mm_run(system, 0, {"a": [(0.0, 0.1)]}, samples=samples), bench="multimodel")
            for system in ("stock", "kvcached", "kvpager")]
    rows = {r["system"]: r for r in analyze.idle_footprint(runs)}
    assert rows["kvpager"]["idle_kv_bytes"] == 64 << 20
    assert rows["kvcached"]["idle_kv_bytes"] == 3 << 20
    assert rows["stock"]["idle_kv_bytes"] == 1 << 30  # static
    assert rows["stock"]["idle_gpu_process_bytes"] == 5 << 30
    assert rows["kvpager"]["idle_bound_bytes"] is None  # a sample without used/reserved
    assert rows["stock"]["within_bound"] is None


@pytest.mark.parametrize("free_pages, within", [(4, True), (5, False)])
def test_kvpagers_idle_footprint_is_checked_against_its_reserve_and_used_pages(free_pages, within):
    """The bound: pages holding live or cached blocks (3 pages of 14 MiB) plus the 4 free pages
    an idle cache keeps; the page size comes from the engine's own samples."""
    page = 14 << 20
    entry = {"mapped": (3 + free_pages) * page, "used": 3 * page, "reserved": free_pages * page}
    samples = [[30.0, {"gpu": {"a": 1 << 30}, "registry": {"a": entry}}]]
    run = dict(_mm_run("kvpager", 0, {"a": [(0.0, 0.1)]}, samples=samples), bench="multimodel",
               kvpager_samples={"a": [{"t": 1.0, "page_bytes": page}]})
    (row,) = analyze.idle_footprint([run])
    assert row["idle_bound_bytes"] == 7 * page and row["within_bound"] is within
    assert ("EXCEEDED" in tables.idle_table([row])) is not within


def test_prefix_hit_rate_is_the_runs_share_of_hits():
    run = _mm_run("kvpager", 0, {"a": [(0.0, 0.1), (1.0, 0.3)]})
    hits, queries = "vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"
    run.update(bench="prefix", metrics_before={"a": {hits: 100, queries: 1000}},
               metrics_after={"a": {hits: 400, queries: 2000}})
    (row,) = analyze.prefix([run])
    assert row["hit_rate"] == pytest.approx(0.3) and row["queries"] == 1000 and row["hits"] == 300
    assert row["ttft_mean_s"] == pytest.approx(0.2)
    assert row["preemptions"] is None  # not recorded by this run
    preempted = "vllm:num_preemptions_total"
    run["metrics_before"]["a"][preempted] = 2
    run["metrics_after"]["a"][preempted] = 7
    (row,) = analyze.prefix([run])
    assert row["preemptions"] == 5
    assert "| 300 | 1000 | 5 |" in tables.prefix_table([row])


def test_tables_render_every_benchmark_and_the_short_table():
    runs = [_overhead_run("stock", 0, 1000), _overhead_run("kvpager", 0, 995),
            _overhead_run("kvcached", 0, 980)]
    mm = [_mm_run(s, 0, {"a": [(0.0, 0.1 * (i + 1))], "b": [(10.0, 0.2)]})
          for i, s in enumerate(("kvpager", "kvcached"))]
    summary, _ = analyze.summarize(runs + mm)
    text = tables.all_tables(summary)
    assert "| overhead: throughput at 4 req/s" in text and "(-0.50 %)" in text
    assert "kvcached / kvpager" in text
    assert "## Idle footprint" not in text  # no samples
    assert summary["trace_mismatches"] == []
    bad = _overhead_run("kvpager", 0, 995)
    bad["trace"] = "other"
    assert analyze.summarize([*runs, bad])[0]["trace_mismatches"] == [["overhead", 0, 4.0]]


def test_leave_out_drops_one_systems_runs_of_one_file_only(tmp_path):
    import gzip
    import json
    first, second = tmp_path / "mm-1.jsonl.gz", tmp_path / "mm-2.jsonl"
    with gzip.open(first, "wt") as f:
        for system in ("stock", "kvcached"):
            f.write(json.dumps({"system": system, "rep": 1}) + "\n")
    second.write_text(json.dumps({"system": "kvcached", "rep": 0}) + "\n")
    kept = analyze.load([str(first), str(second)], [analyze.leave_out_arg(f"{first}:kvcached")])
    assert [(r["system"], r["rep"]) for r in kept] == [("stock", 1), ("kvcached", 0)]
    with pytest.raises(Exception, match="FILE:SYSTEM"):
        analyze.leave_out_arg("kvcached")
