"""Markdown tables of analyze.py's summary: one per benchmark for docs/benchmarks.md, and the
README's short table (stock vs kvcached vs kvpager on the four benchmarks)."""

from __future__ import annotations


def _ms(x) -> str:
    return "n/a" if x is None else f"{x * 1e3:.1f}"


def _pm(m, se, scale=1.0, fmt="{:.1f}") -> str:
    if m is None:
        return "n/a"
    return fmt.format(m * scale) + ("" if se is None else " ± " + fmt.format(se * scale))


def _gib(x) -> str:
    return "n/a" if x is None else f"{x / 2**30:.2f}"


def table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def overhead_table(rows: list) -> str:
    return table(
        ["rate (req/s)", "system", "runs", "throughput (tok/s)", "TTFT mean (ms)", "TTFT p99 (ms)", "TPOT (ms)",
         "Δ throughput vs stock (%)", "Δ TPOT (%)", "Δ TTFT (%)", "within 1 %", "time in kvpager calls (%)"],
        [[f"{r['rate']:g}", r["system"], r["runs"], _pm(r["throughput"], r["throughput_se"], fmt="{:.0f}"),
          _pm(r["ttft_mean"], r["ttft_mean_se"], 1e3), _pm(r["ttft_p99"], r["ttft_p99_se"], 1e3),
          _pm(r["tpot_mean"], r["tpot_mean_se"], 1e3, "{:.2f}"),
          _pm(r.get("throughput_change"), r.get("throughput_change_se"), 100, "{:+.2f}"),
          _pm(r.get("tpot_mean_change"), r.get("tpot_mean_change_se"), 100, "{:+.2f}"),
          _pm(r.get("ttft_mean_change"), r.get("ttft_mean_change_se"), 100, "{:+.2f}"),
          {True: "yes", False: "no"}.get(r.get("throughput_within_1pct"), "n/a"),
          _pm(r.get("kvpager_calls_share"), r.get("kvpager_calls_share_se"), 100, "{:.3f}")
          if "kvpager_calls_share" in r else ""] for r in rows])


def multimodel_tables(mm: dict) -> str:
    p99 = table(["system", "model", "requests at its peak", "failed", "TTFT mean (ms)", "TTFT p99 (ms)",
                 "off-peak requests", "off-peak TTFT mean (ms)", "quiet-phase requests",
                 "quiet-phase TTFT mean (ms)"],
                [[r["system"], r["server"], r["requests"], r["failed"], _ms(r["mean_s"]), _ms(r["p99_s"]),
                  r.get("off_peak_requests", "n/a"), _ms(r.get("off_peak_mean_s")),
                  r.get("quiet_requests", "n/a"), _ms(r.get("quiet_mean_s"))]
                 for r in mm["p99_peak_ttft"]])
    ratios = table(["ratio", "model", "pairs", "p99 TTFT ratio at its peak", "95 % bootstrap interval",
                    "mean TTFT ratio"],
                   [[f"{r['numerator']} / {r['denominator']}", r["server"], r["pairs"], f"{r['p99_ratio']:.2f}",
                     f"{r['interval_95'][0]:.2f} – {r['interval_95'][1]:.2f}", f"{r['mean_ratio']:.2f}"]
                    for r in mm["ratios"]])
    return p99 + "\n" + ratios


def idle_table(rows: list) -> str:
    def bound(r):
        if r.get("idle_bound_bytes") is None:
            return ""
        return f"{_gib(r['idle_bound_bytes'])} ({'held within' if r['within_bound'] else 'EXCEEDED'})"

    return table(["system", "model", "runs", "KV held when idle (GiB)",
                  "reserve + pages of live or cached blocks (GiB)", "process GPU memory when idle (GiB)"],
                 [[r["system"], r["server"], r["runs"], _gib(r["idle_kv_bytes"]), bound(r),
                   _gib(r["idle_gpu_process_bytes"])] for r in rows])


def prefix_table(rows: list) -> str:
    return table(["system", "model", "prefix-cache hit rate", "hits (tokens)", "queries (tokens)", "preemptions",
                  "TTFT mean (ms)", "TTFT p99 (ms)"],
                 [[r["system"], r["server"], "n/a" if r["hit_rate"] is None else f"{r['hit_rate'] * 100:.1f} %",
                   f"{r.get('hits', 0):.0f}", f"{r['queries']:.0f}",
                   "" if r.get("preemptions") is None else f"{r['preemptions']:.0f}",
                   _ms(r["ttft_mean_s"]), _ms(r["ttft_p99_s"])] for r in rows])


def short_table(summary: dict) -> str:
    """The README's table: one line per benchmark, one column per system."""
    systems = ["stock", "kvcached", "kvpager"]
    rows = []
    over = summary.get("overhead") or []
    if over:
        top = max(r["rate"] for r in over)
        cells = {r["system"]: r for r in over if r["rate"] == top}
        rows.append([f"overhead: throughput at {top:g} req/s (tok/s, Δ vs stock)"] + [
            "n/a" if s not in cells else _pm(cells[s]["throughput"], None, fmt="{:.0f}")
            + ("" if s == "stock" else " (" + _pm(cells[s].get("throughput_change"),
                                                 cells[s].get("throughput_change_se"), 100, "{:+.2f}") + " %)")
            for s in systems])
    mm = summary.get("multimodel")
    if mm:
        worst = {}
        for r in mm["p99_peak_ttft"]:
            worst[r["system"]] = max(worst.get(r["system"], 0), r["p99_s"] or 0)
        rows.append(["multimodel: worst model's p99 TTFT at its peak (ms)"] + [_ms(worst.get(s)) for s in systems])
    idle = summary.get("idle")
    if idle:
        total = {}
        for r in idle:
            if r["idle_kv_bytes"] is not None:
                total[r["system"]] = total.get(r["system"], 0) + r["idle_kv_bytes"]
        rows.append(["idle footprint: KV held by the three engines (GiB)"] + [_gib(total.get(s)) for s in systems])
    pre = summary.get("prefix")
    if pre:
        rate = {}
        for s in systems:
            hits = [r["hit_rate"] for r in pre if r["system"] == s and r["hit_rate"] is not None]
            rate[s] = f"{sum(hits) / len(hits) * 100:.1f} %" if hits else "n/a"
        rows.append(["prefix caching under sharing: mean hit rate"] + [rate[s] for s in systems])
    return table(["benchmark"] + systems, rows)


def all_tables(summary: dict) -> str:
    parts = ["## Short table (README)\n\n" + short_table(summary)]
    if summary.get("overhead"):
        parts.append("## Overhead (one model)\n\n" + overhead_table(summary["overhead"]))
    if summary.get("multimodel"):
        parts.append("## Three models, staggered bursts: TTFT at each model's peak\n\n"
                     + multimodel_tables(summary["multimodel"]))
    if summary.get("idle"):
        parts.append("## Idle footprint\n\n" + idle_table(summary["idle"]))
    if summary.get("prefix"):
        parts.append("## Prefix caching under sharing\n\n" + prefix_table(summary["prefix"]))
    devices = "; ".join(f"{m['device']} (commit {m['commit']}, vLLM {m['vllm']})" for m in summary.get("meta", []))
    return f"Runs: {summary.get('runs')}; device: {devices}\n\n" + "\n".join(parts)
