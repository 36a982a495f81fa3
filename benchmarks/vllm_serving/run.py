#!/usr/bin/env python3
"""Issue 22's benchmarks on `vllm serve`: stock vLLM, kvcached and kvpager, same traces, same
machine, same session, in mirrored order (order.py). Each call runs one repetition or a slice of
its slots and appends one JSON line per run to OUT/<benchmark>.jsonl; analyze.py pools them.

    run.py overhead   --model llama-3.1-8b --rates 2 8 32 --duration 30 --rep 0 [--together]
    run.py multimodel --models qwen3-0.6b llama-3.2-1b qwen3-1.7b --budget-gib 6 --rep 0 [--slots 0:4]
    run.py multimodel --rep 1 --together --then prefix:0:0:4 --then multimodel:2
    run.py prefix     (multimodel's options) --prefix-groups 4 --prefix-len 512

overhead: one model alone; per rate the same Poisson trace on every system. --together keeps one
server per system up at once (idle ones wait) and runs the slots against them; otherwise each
slot starts its system's server, runs every rate, stops it. multimodel / prefix: three servers of
one system on one GPU, staggered bursts (each model's peak in its own phase, a trickle otherwise,
then a quiet phase), then --idle-s of idleness for the idle footprint; stock gets a static third
of --budget-gib each, kvpager pools the thirds into one device budget (kvpager-guarantee: each is
guaranteed its third), kvcached gets the whole budget as each engine's capacity and, with
--kvcached-ballast, a ballast process that leaves only the budget free on the device. prefix:
the same with prompts that start with one of --prefix-groups shared prefixes; it records vLLM's
prefix-cache counters from /metrics. With --together every system's three servers stay up for
the whole call (one registry namespace per system) and each --then pass (BENCH:REP[:SLOTS]) runs
on them after the first: the start-ups, not the runs, are most of a call's time. A group's
servers start at once (kvpager's one after another with --one-by-one); with --together the first group starts
alone (servers.ServerGroup says why). Needs KVPAGER_BINARY for the kvpager systems.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import ballast
import loadgen
import model_dirs
import order
import samplers
import servers
import traces
from servers import ServerGroup, ServerSpec


def meta(argv) -> dict:
    """Where and when: GPU (nvidia-smi), host, UTC date, commit, command line."""
    def out(cmd, timeout=10):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                                  cwd=HERE).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""
    gpu = out(["nvidia-smi", "--query-gpu=name,uuid,driver_version,memory.total", "--format=csv,noheader", "-i", "0"])
    # a cold import (~20 s); vLLM's import-time warnings go to stdout too: the version is the last line
    vllm = out([sys.executable, "-c", "import vllm; print(vllm.__version__)"], timeout=120)
    vllm = vllm.splitlines()[-1] if vllm else ""
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "host": socket.gethostname(), "device": gpu, "gpu_uuid": (gpu.split(", ") + ["", ""])[1],
            "commit": out(["git", "describe", "--always", "--dirty"]), "vllm": vllm,
            "command": [sys.executable, *argv]}


def append(path: str, record: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record, default=str) + "\n")


def system_env(args, system: str) -> dict:
    """The base environment of one system's servers: a registry namespace of their own for the
    kvpager systems (no two systems pool shares into one budget)."""
    env = dict(os.environ)
    if args.model_runner == "v1":
        env["VLLM_USE_V2_MODEL_RUNNER"] = "0"
    if servers.is_kvpager(system):
        env["KVPAGER_SHM_PREFIX"] = f"kvb{os.getpid()}-{system}-"
    return env


def calls_totals(work: str, names) -> dict:
    """{server: {method: {calls, seconds}}} from the kvpager-timed processes' files."""
    out = {}
    for name in names:
        d = servers.calls_dir(work, name)
        for f in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            if f.endswith(".json"):
                with open(os.path.join(d, f)) as fh:
                    data = json.load(fh)
                for m, v in data["methods"].items():
                    t = out.setdefault(name, {}).setdefault(m, {"calls": 0, "seconds": 0.0})
                    t["calls"] += v["calls"]
                    t["seconds"] += v["seconds"]
                out.setdefault("_stats", {})[name] = data.get("stats")
    return out


def calls_delta(before: dict, after: dict) -> dict:
    out = {}
    for name, methods in after.items():
        if name == "_stats":
            continue
        for m, v in methods.items():
            b = before.get(name, {}).get(m, {"calls": 0, "seconds": 0.0})
            out.setdefault(name, {})[m] = {"calls": v["calls"] - b["calls"], "seconds": v["seconds"] - b["seconds"]}
    return out


def warm_up(endpoints: dict, count: int = 4) -> None:
    """A few short requests per server (CUDA graphs, allocator growth), not recorded."""
    import workload

    jobs = [(s, r) for s in endpoints
            for r in workload.make_trace([0.0] * count, 64, 8, 1000, 12345, prefix=f"warm-{s}")]
    loadgen.run_open_loop(jobs, endpoints, timeout_s=300)


def probe_for(group_list, names_by_env) -> callable:
    """One sample: kvpager registry per namespace, GPU bytes per server, kvcached segments."""
    def probe():
        sample = {"gpu": {}, "registry": {}, "kvcached": {}}
        for group in group_list:
            sample["gpu"].update(samplers.gpu_by_server(group.servers))
        for env, names in names_by_env:
            sample["registry"].update(samplers.registry(env, names))
        for group in group_list:
            for s in group.servers:
                if servers.is_kvcached(s.spec.system):
                    seg = samplers.kvcached_segment(servers.kvcached_ipc_name(s.spec.name))
                    if seg:
                        sample["kvcached"][s.spec.name] = seg
        return sample
    return probe


def run_once(args, work, groups, jobs, endpoints, *, idle_s=0.0, top_at_s=None, top_env=None,
             top_path=None) -> dict:
    """One open-loop run of ``jobs`` on the started ``groups``; memory sampled through the run
    and ``idle_s`` after it; /metrics and kvpager call tallies before and after."""
    names = [s.spec.name for g in groups for s in g.servers]
    names_by_env = [(g.base_env, [s.spec.name for s in g.servers]) for g in groups
                    if any(servers.is_kvpager(s.spec.system) for s in g.servers)]
    sampler = samplers.MemorySampler(probe_for(groups, names_by_env), args.sample_interval)
    metrics_before = {n: _metrics(e) for n, e in endpoints.items()}
    calls_before = calls_totals(work, names)
    timer = None

    def on_start(t0):
        nonlocal timer
        sampler.t0 = t0
        sampler.__enter__()
        if top_at_s is not None and top_env is not None:
            timer = threading.Timer(top_at_s, lambda: _top(top_env, top_path))
            timer.start()

    _, records = loadgen.run_open_loop(jobs, endpoints, timeout_s=args.request_timeout, on_start=on_start)
    time.sleep(idle_s)
    sampler.__exit__(None, None, None)
    if timer is not None:
        timer.join()
    calls = calls_delta(calls_before, calls_totals(work, names))
    return {"requests": [_slim(r, args.keep_chunks) for r in records],
            "summary": loadgen.summarize_by_server(records),
            "samples": sampler.samples,
            "metrics_before": metrics_before, "metrics_after": {n: _metrics(e) for n, e in endpoints.items()},
            "kvpager_calls": calls or None}


def _metrics(endpoint) -> dict:
    try:
        return samplers.prometheus(f"http://{endpoint.host}:{endpoint.port}/metrics")
    except OSError as e:
        return {"error": str(e)}


def _top(env, path) -> None:
    try:
        import registry_probe

        registry_probe.capture_top(path, env)
        with open(path, "a") as f:
            f.write("\n`kvpager list --json`:\n" + json.dumps(registry_probe.instances(env), indent=1) + "\n")
    except (OSError, ValueError) as e:
        print(f"kvpager top capture failed: {e}", file=sys.stderr)


def _slim(rec, keep_chunks: bool) -> dict:
    d = rec.to_json()
    if not keep_chunks:
        d.pop("chunks")
        itl = d.pop("itl_s")
        d["itl_max_s"] = max(itl) if itl else None
    return d


def _port(args, index: int) -> int:
    return args.port_base + index


def _spec(args, name, model, port, system, kv_bytes, guarantee=0) -> ServerSpec:
    return ServerSpec(name, model_dirs.model_dir(model, args.model_root), port, system, kv_bytes,
                      max_model_len=args.max_model_len, gpu_memory_utilization=args.gpu_util,
                      enforce_eager=args.enforce_eager, guarantee_bytes=guarantee,
                      extra=list(args.serve_arg or []))


def start_together(stack: contextlib.ExitStack, groups: list) -> None:
    """Starts ``groups`` (every one stopped when ``stack`` unwinds): the first alone, so that its
    servers compile and fill vLLM's torch.compile cache, then all the others at once, which find
    their entries there (no two servers write one cache entry at the same time)."""
    groups = sorted(groups, key=lambda g: g.sequential)  # the sequential ones start last
    first, *rest = groups
    stack.enter_context(first)
    for g in rest:
        stack.push(g.__exit__)
        g.start()
    for g in rest:
        g.wait_ready()


def cmd_overhead(args, work) -> int:
    slots = order.mirrored(args.systems, args.rep)
    chosen = order.parse_slots(args.slots, len(slots))
    vocab = model_dirs.shape(args.model)["vocab_size"]
    kv = int(args.kv_gib * 2**30)
    rate_jobs = {rate: traces.poisson_jobs("llm", rate, args.duration, tuple(args.input_len),
                                           tuple(args.output_len), vocab, traces.trace_seed(args.seed, args.rep, i))
                 for i, rate in enumerate(args.rates)}
    info = meta(sys.argv)
    path = os.path.join(args.out, "overhead.jsonl")

    def record(slot, system, rate, group, result):
        jobs = rate_jobs[rate]
        append(path, {"bench": "overhead", "rep": args.rep, "slot": slot, "system": system, "rate": rate,
                      "model": args.model, "kv_bytes": kv, "trace": traces.fingerprint(jobs),
                      "servers": [{"name": s.spec.name, "ready_after_s": s.ready_after_s} for s in group.servers],
                      "meta": info, **result})
        s = result["summary"]["llm"]
        print(f"rep {args.rep} slot {slot} {system:<18} rate {rate:g}/s: {s.get('completed')} done, "
              f"{s.get('output_tokens_per_s', 0):.0f} tok/s, TTFT {s.get('ttft_s', {}).get('mean', 0) * 1e3:.1f} ms, "
              f"TPOT {s.get('tpot_s', {}).get('mean', 0) * 1e3:.2f} ms", flush=True)

    def group_of(system, index):
        spec = _spec(args, f"llm-{system}", args.model, _port(args, index), system, kv)
        return ServerGroup([spec], system_env(args, system), work, args.ready_timeout)

    def endpoints_of(group):
        return {"llm": loadgen.Endpoint("127.0.0.1", group.specs[0].port, group.specs[0].name)}

    if args.together:
        with contextlib.ExitStack() as stack:
            systems = list(dict.fromkeys(slots[k] for k in chosen))
            groups = {system: group_of(system, i) for i, system in enumerate(systems)}
            start_together(stack, list(groups.values()))
            for g in groups.values():
                warm_up(endpoints_of(g))
            for rate in args.rates:
                for k in chosen:
                    g = groups[slots[k]]
                    record(k, slots[k], rate, g, run_once(args, work, [g], rate_jobs[rate], endpoints_of(g)))
        return 0
    for k in chosen:
        with group_of(slots[k], 0) as g:
            warm_up(endpoints_of(g))
            for rate in args.rates:
                record(k, slots[k], rate, g, run_once(args, work, [g], rate_jobs[rate], endpoints_of(g)))
    return 0


def parse_pass(text: str) -> tuple:
    """'prefix:0' -> ("prefix", 0, None); 'multimodel:2:0:4' -> ("multimodel", 2, "0:4")."""
    bench, _, rest = text.partition(":")
    rep, _, slots = rest.partition(":")
    if bench not in ("multimodel", "prefix") or not rep.isdigit():
        raise ValueError(f"--then {text!r}: expected multimodel|prefix:REP[:SLOTS], e.g. prefix:0:0:4")
    return bench, int(rep), slots or None


def cmd_multimodel(args, work) -> int:
    """Every pass (the command's benchmark and repetition, then each --then) runs its slots; with
    --together on one set of servers per system, started once, otherwise three new servers per
    slot."""
    passes = [(args.bench, args.rep, args.slots)] + [parse_pass(t) for t in args.then or []]
    if len(passes) > 1 and not args.together:
        raise SystemExit("--then needs --together (the passes share one set of servers per system)")
    budget = int(args.budget_gib * 2**30)
    third = budget // len(args.models)
    names = [f"m{i}-{m}" for i, m in enumerate(args.models)]
    vocabs = [model_dirs.shape(m)["vocab_size"] for m in args.models]
    info = meta(sys.argv)
    port_of = {}

    def group_of(system):
        base = port_of.setdefault(system, len(port_of) * len(names))
        kv = budget if servers.is_kvcached(system) else third
        specs = [_spec(args, n, m, _port(args, base + i), system, kv, guarantee=third)
                 for i, (n, m) in enumerate(zip(names, args.models))]
        return ServerGroup(specs, system_env(args, system), work, args.ready_timeout,
                           sequential=args.one_by_one and servers.is_kvpager(system))

    def endpoints_of(group):
        return {s.spec.name: loadgen.Endpoint("127.0.0.1", s.spec.port, s.spec.name) for s in group.servers}

    def run_slot(group, bench, rep, k, system, jobs, config):
        with contextlib.ExitStack() as stack:
            held = leave_free = free_after = None
            if servers.is_kvcached(system) and args.kvcached_ballast:
                segments = [samplers.kvcached_segment(servers.kvcached_ipc_name(n)) for n in names]
                kv_now = sum(samplers.kvcached_mapped_bytes(seg) for seg in segments if seg)
                leave_free = ballast.kvcached_free_target(
                    total=ballast.gpu_total_bytes(), budget=budget, kv_now=kv_now,
                    utilization=servers.KVCACHED_GPU_UTILIZATION, margin=int(args.ballast_margin_gib * 2**30))
                held_by = ballast.hold(leave_free, os.path.join(work, f"ballast-{bench}-{rep}-{k}.log"))
                stack.callback(held_by.stop)
                held, free_after = held_by.held, held_by.free_after
            top_path = os.path.join(work, f"kvpager_top_{system}_{bench}_rep{rep}_slot{k}.txt")
            result = run_once(args, work, [group], jobs, endpoints_of(group), idle_s=args.idle_s,
                              top_at_s=(len(names) - 0.5) * args.phase_s if servers.is_kvpager(system) else None,
                              top_env=group.base_env, top_path=top_path)
        if servers.is_kvpager(system) and os.path.exists(top_path):
            with open(top_path) as f:
                result["kvpager_top"] = f.read()
        result["kvpager_samples"] = _kvpager_samples(work, names) if servers.is_kvpager(system) else None
        append(os.path.join(args.out, f"{bench}.jsonl"),
               {"bench": bench, "rep": rep, "slot": k, "system": system, "models": args.models,
                "servers": names, "budget_bytes": budget, "kv_bytes": group.specs[0].kv_bytes, "ballast_bytes": held,
                "ballast_leaves_free": leave_free, "free_after_ballast": free_after,
                "config": config, "trace": traces.fingerprint(jobs), "gc": group.gc_output,
                "together": args.together,
                "ready_after_s": {s.spec.name: s.ready_after_s for s in group.servers},
                "meta": info, **result})
        for n, s in result["summary"].items():
            print(f"{bench} rep {rep} slot {k} {system:<18} {n:<18}: {s.get('completed')} done, "
                  f"TTFT p99 {s.get('ttft_s', {}).get('p99', 0) * 1e3:.0f} ms", flush=True)

    def jobs_of(bench, rep):
        shared = (args.prefix_groups, args.prefix_len) if bench == "prefix" else None
        config = {key: getattr(args, key) for key in ("phase_s", "peak_rate", "low_rate", "quiet_s", "idle_s",
                                                       "input_len", "output_len")}
        config.update(prefix_groups=shared[0] if shared else 0, prefix_len=shared[1] if shared else 0)
        jobs = traces.staggered_jobs(names, vocabs, phase_s=args.phase_s, peak_rate=args.peak_rate,
                                     low_rate=args.low_rate, quiet_s=args.quiet_s, input_len=tuple(args.input_len),
                                     output_len=tuple(args.output_len), seed=traces.trace_seed(args.seed, rep),
                                     shared_prefix=shared)
        return jobs, config

    plan = []
    for bench, rep, slots_text in passes:
        slots = order.mirrored(args.systems, rep)
        plan += [(bench, rep, k, slots[k]) for k in order.parse_slots(slots_text, len(slots))]
    if args.together:
        with contextlib.ExitStack() as stack:
            groups = {system: group_of(system) for system in dict.fromkeys(p[3] for p in plan)}
            start_together(stack, list(groups.values()))
            for g in groups.values():
                warm_up(endpoints_of(g))
            for bench, rep, k, system in plan:
                run_slot(groups[system], bench, rep, k, system, *jobs_of(bench, rep))
        return 0
    for bench, rep, k, system in plan:
        with group_of(system) as group:
            warm_up(endpoints_of(group))
            run_slot(group, bench, rep, k, system, *jobs_of(bench, rep))
    return 0


def _kvpager_samples(work, names) -> dict:
    """KVPAGER_VLLM_SAMPLES files of the run's servers (held bytes over time), then cleared."""
    out = {}
    for n in names:
        p = os.path.join(work, f"{n}.samples.jsonl")
        if os.path.exists(p):
            with open(p) as f:
                out[n] = [json.loads(line) for line in f if line.strip()][-2000:]
            os.unlink(p)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="bench", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", required=True, help="results folder (appends <bench>.jsonl)")
    common.add_argument("--work", help="logs and scratch (default: a new temporary folder)")
    common.add_argument("--model-root", help="config-only model dirs (default: WORK/models)")
    common.add_argument("--rep", type=int, default=0, help="repetition: picks the trace and the order")
    common.add_argument("--slots", help="run only these slots of the repetition: 'i', 'i:j'")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--enforce-eager", action="store_true", help="every system without CUDA graphs")
    common.add_argument("--model-runner", choices=["default", "v1"], default="default",
                        help="v1: VLLM_USE_V2_MODEL_RUNNER=0 for every system (kvcached patches V1's "
                             "runner only; docs/benchmarks.md)")
    common.add_argument("--port-base", type=int, default=18100)
    common.add_argument("--ready-timeout", type=float, default=420)
    common.add_argument("--request-timeout", type=float, default=300)
    common.add_argument("--sample-interval", type=float, default=0.5)
    common.add_argument("--max-model-len", type=int, default=4096)
    common.add_argument("--gpu-util", type=float, default=0.2,
                        help="--gpu-memory-utilization (the KV size is --kv-cache-memory-bytes)")
    common.add_argument("--serve-arg", action="append", help="one more vllm serve argument (repeatable)")
    common.add_argument("--keep-chunks", action="store_true", help="store every chunk time per request")
    common.add_argument("--input-len", type=int, nargs=2, default=[256, 1024])
    common.add_argument("--output-len", type=int, nargs=2, default=[64, 256])
    o = sub.add_parser("overhead", parents=[common])
    o.add_argument("--model", default="llama-3.1-8b")
    o.add_argument("--rates", type=float, nargs="+", default=[2, 8, 32])
    o.add_argument("--duration", type=float, default=30)
    o.add_argument("--kv-gib", type=float, default=16)
    o.add_argument("--systems", nargs="+", default=["stock", "kvcached", "kvpager"], choices=servers.SYSTEMS)
    o.add_argument("--together", action="store_true", help="one server per system up at once")
    for name in ("multimodel", "prefix"):
        m = sub.add_parser(name, parents=[common])
        m.add_argument("--models", nargs="+", default=["qwen3-0.6b", "llama-3.2-1b", "qwen3-1.7b"])
        m.add_argument("--budget-gib", type=float, default=6)
        m.add_argument("--phase-s", type=float, default=15)
        m.add_argument("--peak-rate", type=float, default=8)
        m.add_argument("--low-rate", type=float, default=0.5)
        m.add_argument("--quiet-s", type=float, default=10)
        m.add_argument("--idle-s", type=float, default=15)
        m.add_argument("--systems", nargs="+", default=["stock", "kvcached", "kvpager", "kvpager-guarantee"],
                       choices=servers.SYSTEMS)
        m.add_argument("--kvcached-ballast", action=argparse.BooleanOptionalAction, default=True)
        m.add_argument("--ballast-margin-gib", type=float, default=0.0)
        m.add_argument("--prefix-groups", type=int, default=4, help="prefix passes: shared prefixes")
        m.add_argument("--prefix-len", type=int, default=512, help="prefix passes: tokens per shared prefix")
        m.add_argument("--together", action="store_true",
                       help="one set of servers per system, started once, for every pass")
        m.add_argument("--one-by-one", action="store_true",
                       help="start kvpager's servers one after another (default: all at once)")
        m.add_argument("--then", action="append", metavar="BENCH:REP[:SLOTS]",
                       help="one more pass on the same servers (needs --together): multimodel:2, prefix:0:0:4")
    args = p.parse_args(argv)
    # a SIGTERM (the GPU call's timeout) unwinds like an exception: every server is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = args.work or tempfile.mkdtemp(prefix="kvpager-vllm-bench-")
    os.makedirs(work, exist_ok=True)
    args.model_root = args.model_root or os.path.join(work, "models")
    print(f"work folder (logs): {work}", flush=True)
    if args.bench == "overhead":
        return cmd_overhead(args, work)
    return cmd_multimodel(args, work)


if __name__ == "__main__":
    sys.exit(main())
