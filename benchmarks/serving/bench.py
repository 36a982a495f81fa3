#!/usr/bin/env python3
"""Serving benchmarks of seed 002 on transformers' continuous batching: stock vs kvpager.

    bench.py correctness  [--models tiny-gqa tiny-mha]          token- and logit-identical outputs
    bench.py overhead     --model llama-3.1-8b --rates 1 4 12    throughput, TTFT, ITL per rate
    bench.py layout       --model llama-3.1-8b                   per-layer vs interleaved
    bench.py multimodel   --models qwen3-0.6b llama-3.2-1b qwen3-1.7b --budget-gib 3
                          three processes, one GPU, staggered bursts; static thirds vs elastic;
                          idle footprint after the bursts; `kvpager top` captured mid-run
Each writes --json (results) and PNG plots under --plots. Run with PYTHONPATH=<build>/python
(the kvpager package) and KVPAGER_BINARY=<build>/kvpager (multimodel reads the registry with
`kvpager list --json`). Models are shipped configs (models/*.json) with random weights.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import driver  # noqa: E402
import models  # noqa: E402
import plots  # noqa: E402
import registry_probe  # noqa: E402
import workload  # noqa: E402
from engine import Engine  # noqa: E402


def _device(args):
    import torch

    if args.device:
        return args.device
    return "cuda" if torch.cuda.is_available() else "cpu"


def _dump(path, obj):
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, default=str)


def _fmt_ms(stats, key="mean"):
    v = stats.get(key) if stats else None
    return f"{v * 1e3:8.1f}" if isinstance(v, (int, float)) else "       -"


def _row(label, s):
    return (f"{label:<34} {s.get('completed', 0):>5} {s.get('requests_per_s', 0):7.2f} "
            f"{s.get('output_tokens_per_s', 0):9.1f} {_fmt_ms(s.get('ttft_s'))} "
            f"{_fmt_ms(s.get('ttft_s'), 'p99')} {_fmt_ms(s.get('tpot_s'))} {_fmt_ms(s.get('itl_s'), 'p99')}")


HEADER = (f"{'run':<34} {'done':>5} {'req/s':>7} {'out tok/s':>9} {'TTFT ms':>8} {'TTFT p99':>8} "
          f"{'TPOT ms':>8} {'ITL p99':>8}")


# ----------------------------------------------------------------------------- correctness
def generate_with_logits(model, prompts, max_new_tokens, *, memory, layout=None, block_size=16,
                         num_blocks=64, max_batch_tokens=128):
    """Greedy generation of ``prompts`` in one continuous-batching run; returns
    (tokens per request, every lm_head output in order)."""
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    logits = []
    hook = model.lm_head.register_forward_hook(lambda m, i, o: logits.append(o.detach().float().cpu()))
    gc_ = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=-1, pad_token_id=0)
    cb = ContinuousBatchingConfig(block_size=block_size, num_blocks=num_blocks,
                                  max_batch_tokens=max_batch_tokens, use_cuda_graph=False)
    try:
        if memory == "kvpager":
            from kvpager.integrations import transformers as kvt

            with kvt.kvpager_cache(layout=layout, reserve_pages=0, max_idle_pages=0):
                out = model.generate_batch(prompts, generation_config=gc_, continuous_batching_config=cb)
        else:
            out = model.generate_batch(prompts, generation_config=gc_, continuous_batching_config=cb)
    finally:
        hook.remove()
    tokens = {k: list(v.generated_tokens) for k, v in out.items()}
    return tokens, logits


def correctness_prompts(vocab_size, seed=0):
    import random

    rng = random.Random(seed)
    lengths = [1, 5, 17, 33, 64, 100, 3, 250]
    return [[rng.randrange(10, vocab_size) for _ in range(n)] for n in lengths]


def cmd_correctness(args):
    import torch

    device = _device(args)
    report = {"device": device, "models": {}}
    ok_all = True
    for name in args.models:
        model = models.build_model(name, device=device, dtype=args.dtype, seed=args.seed)
        prompts = correctness_prompts(model.config.vocab_size, args.seed)
        ref_tokens, ref_logits = generate_with_logits(model, prompts, args.max_new_tokens, memory="stock")
        entry = {}
        for layout in args.layouts:
            tokens, logits = generate_with_logits(model, prompts, args.max_new_tokens,
                                                  memory="kvpager", layout=layout)
            same_tokens = tokens == ref_tokens
            same_logits = len(logits) == len(ref_logits) and all(
                torch.equal(a, b) for a, b in zip(logits, ref_logits))
            entry[layout] = {"tokens_identical": same_tokens, "logits_bitwise_equal": same_logits,
                             "forward_passes": len(logits)}
            ok_all &= same_tokens and same_logits
            print(f"{name:<10} {layout:<12} tokens {'identical' if same_tokens else 'DIFFER'}, "
                  f"logits {'bitwise equal' if same_logits else 'DIFFER'} over {len(logits)} forward passes")
        report["models"][name] = entry
        del model
    report["passed"] = ok_all
    _dump(args.json, report)
    return 0 if ok_all else 1


# ----------------------------------------------------------------------------- overhead
def _engine(model, memory, args, **extra):
    return Engine(model, memory=memory, num_blocks=args.num_blocks, block_size=args.block_size,
                  max_batch_tokens=args.max_batch_tokens, layout=extra.pop("layout", args.layout),
                  model_name=args.model, **extra)


def _mean_summary(summaries):
    """Field-wise mean of run summaries (the numbers compared: throughput, TTFT, TPOT, ITL).
    ValueError when a run completed nothing (its summary has no figures to average)."""
    empty = [s for s in summaries if not s.get("completed")]
    if empty:
        raise ValueError(f"{len(empty)} of {len(summaries)} runs completed no request: {empty}")
    def avg(get):
        vals = [get(s) for s in summaries]
        return sum(vals) / len(vals)
    out = dict(summaries[0])
    out["output_tokens_per_s"] = avg(lambda s: s["output_tokens_per_s"])
    out["requests_per_s"] = avg(lambda s: s["requests_per_s"])
    for key in ("ttft_s", "tpot_s", "itl_s"):
        out[key] = {k: avg(lambda s: s[key][k]) for k in ("mean", "p50", "p99")}
    return out


class _TimedKv:
    """Forwards to a kvpager.KvCache and adds up the wall time its method calls take (from the
    generation thread: alloc, free, available, owed_blocks, stats). An upper bound on the host
    time kvpager adds to a run: it includes the wrapper itself and waits for the GIL."""

    def __init__(self, kv):
        self._kv, self.seconds, self.calls = kv, 0.0, 0

    def __getattr__(self, name):
        attr = getattr(self._kv, name)
        if not callable(attr):
            return attr

        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t
                self.calls += 1

        return timed


def _time_kvpager_calls(engine):
    """Puts a _TimedKv between a kvpager engine's cache and kvpager; returns it."""
    timed = _TimedKv(engine.cache.kv)
    engine.cache.kv = timed
    engine.cache._block_manager.kv = timed
    return timed


def cmd_overhead(args):
    """Per rate, the same trace on stock and kvpager in ABBA order (stock, kvpager, kvpager,
    stock for --repeat 2), so drift and warm-up effects cancel; each engine's figures are the
    mean of its runs."""
    device = _device(args)
    model = models.build_model(args.model, device=device, dtype=args.dtype, seed=args.seed)
    vocab = model.config.vocab_size
    runs = []
    print(HEADER)
    order = []
    for i in range(args.repeat):
        order += ["stock", "kvpager"] if i % 2 == 0 else ["kvpager", "stock"]
    # The process's first engine pays one-time costs (kernel selection, allocator growth): a
    # throwaway run of each kind first.
    for memory in ("stock", "kvpager"):
        with _engine(model, memory, args) as engine:
            driver.run_trace(engine, workload.make_trace([0.0] * 8, tuple(args.input_len), 16, vocab, 1, "warm"))
    # Kernel cost on each memory: one layer's gather + SDPA on a stock tensor and on kvpager's.
    attention = attention_microbench(args.model, device, args.dtype, 32, 1024, kinds=("stock", "per-layer"))
    print(f"attention (gather + SDPA, one layer, batch 32 x 1024): stock {attention['stock']:.3f} ms, "
          f"kvpager {attention['per-layer']:.3f} ms", flush=True)
    for rate in args.rates:
        arrivals = workload.poisson_arrivals(rate, args.duration, __import__("random").Random(args.seed))
        trace = workload.make_trace(arrivals, tuple(args.input_len), tuple(args.output_len), vocab, args.seed)
        for memory in order:
            with _engine(model, memory, args) as engine:
                warm = workload.make_trace([0.0] * 4, 32, 8, vocab, args.seed + 99, prefix="warm")
                driver.run_trace(engine, warm)
                timed = _time_kvpager_calls(engine) if memory == "kvpager" else None
                result = driver.run_trace(engine, trace)
            result.update(rate=rate, memory=memory, layout=args.layout if memory == "kvpager" else None)
            if timed is not None:
                result["kvpager_calls"] = {"seconds": timed.seconds, "calls": timed.calls,
                                           "share_of_wall": timed.seconds / result["summary"]["wall_s"]}
            runs.append(result)
            print(_row(f"rate {rate:g}/s {memory}", result["summary"]), flush=True)
    verdicts = []
    for rate in args.rates:
        s = _mean_summary([r["summary"] for r in runs if r["rate"] == rate and r["memory"] == "stock"])
        k = _mean_summary([r["summary"] for r in runs if r["rate"] == rate and r["memory"] == "kvpager"])
        thr = k["output_tokens_per_s"] / s["output_tokens_per_s"] - 1
        tpot = k["tpot_s"]["mean"] / s["tpot_s"]["mean"] - 1
        ttft = k["ttft_s"]["mean"] / s["ttft_s"]["mean"] - 1
        # per ABBA round: the change within the round, and the spread of those changes
        pairs = list(zip([r["summary"] for r in runs if r["rate"] == rate and r["memory"] == "stock"],
                         [r["summary"] for r in runs if r["rate"] == rate and r["memory"] == "kvpager"]))
        thr_pairs = [b["output_tokens_per_s"] / a["output_tokens_per_s"] - 1 for a, b in pairs]
        tpot_pairs = [b["tpot_s"]["mean"] / a["tpot_s"]["mean"] - 1 for a, b in pairs]

        def stderr(xs):
            if len(xs) < 2:
                return None
            m = sum(xs) / len(xs)
            return (sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs)) ** 0.5

        shares = [r["kvpager_calls"]["share_of_wall"] for r in runs
                  if r["rate"] == rate and "kvpager_calls" in r]
        calls = [r["kvpager_calls"]["calls"] for r in runs if r["rate"] == rate and "kvpager_calls" in r]
        verdicts.append({"rate": rate, "kvpager_calls_share_of_wall": max(shares),
                         "kvpager_calls_per_run": sum(calls) / len(calls)})
        verdicts[-1].update({"stock": s, "kvpager": k, "throughput_change": thr,
                         "tpot_change": tpot, "ttft_change": ttft,
                         "throughput_change_per_round": thr_pairs, "tpot_change_per_round": tpot_pairs,
                         "throughput_change_stderr": stderr(thr_pairs),
                         "tpot_change_stderr": stderr(tpot_pairs)})
        se = lambda x: f" ± {x * 100:.1f}" if x is not None else ""  # noqa: E731
        print(f"rate {rate:g}/s (mean of {args.repeat} each): kvpager vs stock throughput "
              f"{thr * 100:+.1f}{se(stderr(thr_pairs))} %, TPOT {tpot * 100:+.1f}{se(stderr(tpot_pairs))} %, "
              f"TTFT {ttft * 100:+.1f} %; time in kvpager calls {max(shares) * 100:.3f} % of the run "
              f"at most ({sum(calls) / len(calls):.0f} calls per run)")
    if args.plots:
        for rate in args.rates:
            for metric, label in (("ttft", "TTFT"), ("itl", "inter-token latency")):
                series = {}
                for r in runs:
                    if r["rate"] == rate:
                        vals = [q["ttft_s"] for q in r["requests"]] if metric == "ttft" else \
                            [x for q in r["requests"] for x in q["itl_s"]]
                        series.setdefault(r["memory"], []).extend(vals)
                plots.latency_cdfs(os.path.join(args.plots, f"overhead_{metric}_rate{rate:g}.png"),
                                   series, label, f"{args.model}, {rate:g} req/s: {label}")
    _dump(args.json, {"config": vars(args), "attention_ms": attention, "runs": runs,
                      "comparison": verdicts})
    return 0


# ----------------------------------------------------------------------------- layout
def attention_microbench(model_name, device, dtype, batch, context, iters=50,
                         kinds=("per-layer", "interleaved")):
    """transformers' paged|sdpa attention for one layer: gather the batch's KV rows from the
    cache tensor (index_select, as PagedAttentionCache.update does) and run SDPA; per kind: a
    kvpager per-layer tensor, the same layer's flat view of an interleaved space, or "stock"
    (a torch tensor of the per-layer shape, as transformers allocates it)."""
    import torch
    import torch.nn.functional as F
    import kvpager
    from kvpager.integrations.transformers import _flat_layer_tensors

    cfg = models.load_config(model_name)
    kv_heads = cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    q_heads, layers, bs = cfg.num_attention_heads, cfg.num_hidden_layers, 16
    blocks = batch * context // bs
    out = {}
    for layout in kinds:
        kv = kvpager.KvCache(layers, kv_heads, head_dim, dtype, bs, blocks + 1,
                             layout="per-layer" if layout == "stock" else layout,
                             device=device if device != "cuda" else "cuda:0", reserve_pages=0)
        ids = kv.alloc(blocks)
        keys, values, stride = _flat_layer_tensors(kv)
        k, v = keys[layers // 2], values[layers // 2]
        if layout == "stock":  # same shape and rows, memory from PyTorch's allocator
            k, v = torch.zeros_like(k), torch.zeros_like(v)
        rows = torch.tensor([i * stride * bs + o for i in ids for o in range(bs)], device=k.device)
        k.index_fill_(0, rows, 0.01)
        v.index_fill_(0, rows, 0.02)
        q = torch.randn(batch, q_heads, 1, head_dim, device=k.device, dtype=k.dtype)

        def step():
            kk = torch.index_select(k, 0, rows).view(batch, context, kv_heads, head_dim).transpose(1, 2)
            vv = torch.index_select(v, 0, rows).view(batch, context, kv_heads, head_dim).transpose(1, 2)
            return F.scaled_dot_product_attention(q, kk, vv, enable_gqa=True)

        for _ in range(5):
            step()
        if k.is_cuda:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                step()
            end.record()
            end.synchronize()
            ms = start.elapsed_time(end) / iters
        else:
            t = time.perf_counter()
            for _ in range(iters):
                step()
            ms = (time.perf_counter() - t) * 1e3 / iters
        out[layout] = ms
        del keys, values, k, v
        kv.free(ids)
        kv.close()
    return out


def cmd_layout(args):
    device = _device(args)
    report = {"config": vars(args), "attention_ms": {}, "end_to_end": {}}
    for batch, context in ((32, 1024), (64, 2048)):
        r = attention_microbench(args.model, device, args.dtype, batch, context)
        report["attention_ms"][f"batch{batch}_ctx{context}"] = r
        print(f"attention (gather + SDPA, one layer) batch {batch} context {context}: "
              f"per-layer {r['per-layer']:.3f} ms, interleaved {r['interleaved']:.3f} ms "
              f"(interleaved/per-layer {r['interleaved'] / r['per-layer']:.2f})", flush=True)
    model = models.build_model(args.model, device=device, dtype=args.dtype, seed=args.seed)
    trace = workload.make_trace([0.0] * args.requests, tuple(args.input_len), tuple(args.output_len),
                                model.config.vocab_size, args.seed)
    print(HEADER)
    kinds = [("stock", None), ("kvpager", "per-layer"), ("kvpager", "interleaved")]
    # Mirrored rounds (S P I, I P S, S P I, ...): every kind has the same mean position, so a
    # linear drift of the process (warm-up, clocks) cancels; a throwaway run of each kind first.
    order = [k for r in range(args.repeat) for k in (kinds if r % 2 == 0 else kinds[::-1])]
    warm = workload.make_trace([0.0] * 4, 32, 8, model.config.vocab_size, 7, "warm")
    for memory, layout in kinds:
        with _engine(model, memory, args, layout=layout) as engine:
            driver.run_trace(engine, warm)
    summaries = {}
    for memory, layout in order:
        with _engine(model, memory, args, layout=layout) as engine:
            driver.run_trace(engine, warm)
            result = driver.run_trace(engine, trace)
        label = memory if layout is None else f"{memory} {layout}"
        summaries.setdefault(label, []).append(result["summary"])
        print(_row(f"closed loop {args.requests} req, {label}", result["summary"]), flush=True)
    for label, runs in summaries.items():
        report["end_to_end"][label] = _mean_summary(runs)
        report["end_to_end"][label]["runs"] = runs
        print(_row(f"mean of {len(runs)}, {label}", report["end_to_end"][label]), flush=True)
    e2e = report["end_to_end"]
    ratio = e2e["kvpager interleaved"]["output_tokens_per_s"] / e2e["kvpager per-layer"]["output_tokens_per_s"]
    report["interleaved_over_per_layer_throughput"] = ratio
    print(f"end to end: interleaved / per-layer output throughput {ratio:.3f}")
    _dump(args.json, report)
    return 0


# ----------------------------------------------------------------------------- multimodel
def staggered_trace(index, count, args, vocab, seed):
    """Model ``index`` of ``count``: workload.staggered_arrivals, lengths from ``args``."""
    import random

    arrivals = workload.staggered_arrivals(index, count, args.phase_s, args.peak_rate, args.low_rate,
                                           args.quiet_s, random.Random(seed))
    return workload.make_trace(arrivals, tuple(args.input_len), tuple(args.output_len), vocab, seed,
                               prefix=f"m{index}")


def _mean(xs):
    return sum(xs) / len(xs) if xs else None


def _ratio(stock, kvpager):
    return stock / kvpager if stock and kvpager else None


def _fmt_ratio(r):
    return f"{r:.2f}x" if r is not None else "n/a"


def _print_memory_waits(res, quiet_from):
    """How long a kvpager instance's requests waited for memory other instances held (or that
    it owed them), in all and in the quiet phase: tells a latency cost of sharing memory apart
    from one of sharing the GPU."""
    spans = res.get("memory_waits") or []
    quiet = [(t, d) for t, d in spans if t + d > quiet_from]
    def line(xs):
        total = sum(d for _, d in xs)
        return f"{len(xs)} spans, {total:.2f} s" + (f", longest {max(d for _, d in xs) * 1e3:.0f} ms" if xs else "")
    print(f"{res['model']}: waited for memory others held: {line(spans)}; in the quiet phase: {line(quiet)}")


def _die_with_parent():
    """A serving child outlives no parent (one killed by a timeout would hold the GPU)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def cmd_serve_one(args):
    """Child of multimodel: one model, one engine, one trace; waits for the start file."""
    _die_with_parent()
    device = _device(args)
    model = models.build_model(args.model, device=device, dtype=args.dtype, seed=args.seed)
    trace = [workload.RequestSpec(**r) for r in json.load(open(args.trace))]
    engine = Engine(model, memory=args.memory, num_blocks=args.num_blocks, block_size=args.block_size,
                    max_batch_tokens=args.max_batch_tokens, layout=args.layout, instance=args.instance,
                    model_name=args.model, reserve_pages=args.reserve_pages,
                    max_idle_pages=args.max_idle_pages, guarantee_bytes=args.guarantee_bytes or None,
                    cpu_offload_gib=args.cpu_offload_gib)
    driver.run_trace(engine, workload.make_trace([0.0] * 2, 32, 8, model.config.vocab_size, 5, "warm"))
    if engine.kv is not None:
        engine.kv.trim()
    open(args.ready, "w").write("ready")
    while not os.path.exists(args.start):
        time.sleep(0.01)
    t0_wall = float(open(args.start).read())
    t0 = time.perf_counter() - (time.time() - t0_wall)
    result = driver.run_trace(engine, trace, t0=t0)
    time.sleep(args.idle_s)  # idle after the burst: the idle policy unmaps free pages
    result["idle"] = {"kv_bytes": engine.kv_bytes()}
    spans = getattr(engine.cache, "memory_wait_spans", None)
    if spans is not None:  # kvpager: when requests waited for memory other instances held
        result["memory_waits"] = [(start - t0, seconds) for start, seconds in spans()]
    if engine.kv is not None:
        st = engine.kv.stats()
        # the idle policy's promise: pages with blocks in use (or cached, or the null block)
        # plus at most max(reserve, max_idle) free pages
        bound = st["in_use_bytes"] + max(args.reserve_pages, args.max_idle_pages) * st["page_bytes"]
        result["idle"].update(blocks_in_use=st["blocks_in_use"], mapped_pages=st["mapped_pages"],
                              free_pages=st["free_pages"], page_bytes=st["page_bytes"],
                              in_use_bytes=st["in_use_bytes"], bound_bytes=bound,
                              within_bound=engine.kv_bytes() <= bound,
                              reserve_pages=args.reserve_pages, max_idle_pages=args.max_idle_pages)
        result["idle"]["after_trim_bytes"] = engine.kv_bytes() - engine.kv.trim()
    result.update(model=args.model, memory=args.memory, instance=args.instance)
    _dump(args.out, result)
    engine.close()
    return 0


def cmd_multimodel(args):
    import torch

    device = _device(args)
    names = args.models
    block_bytes = {n: models.kv_bytes_per_token(n) * args.block_size for n in names}
    budget = int(args.budget_gib * 2**30)
    report = {"config": vars(args), "runs": {}}
    work = tempfile.mkdtemp(prefix="kvpager-multimodel-")
    prefix = f"kvpager-mm{os.getpid()}-"
    env = dict(os.environ, KVPAGER_SHM_PREFIX=prefix)
    for memory in args.memory:
        procs, outs, instances = [], [], []
        start = os.path.join(work, f"{memory}.start")
        for i, name in enumerate(names):
            trace = staggered_trace(i, len(names), args, models.load_config(name).vocab_size, args.seed + i)
            tpath = os.path.join(work, f"{memory}-{i}.trace.json")
            json.dump([r.to_json() for r in trace], open(tpath, "w"))
            # stock: a static 1/N each; stock-whole: the whole budget each (N times over-committed:
            # the batches the busy model runs with elastic memory, without kvpager, to tell the
            # GPU time those take from the others apart from any cost of kvpager itself)
            share = budget // len(names) if memory == "stock" else budget
            instance = f"{name}-{i}"
            out = os.path.join(work, f"{memory}-{i}.json")
            ready = os.path.join(work, f"{memory}-{i}.ready")
            cmd = [sys.executable, os.path.abspath(__file__), "serve-one", "--model", name,
                   "--memory", "kvpager" if memory == "kvpager" else "stock",
                   "--num-blocks", str(share // block_bytes[name]), "--block-size", str(args.block_size),
                   "--max-batch-tokens", str(args.max_batch_tokens), "--trace", tpath, "--out", out,
                   "--ready", ready, "--start", start, "--instance", instance, "--idle-s", str(args.idle_s),
                   "--reserve-pages", str(args.reserve_pages), "--max-idle-pages", str(args.max_idle_pages),
                   "--dtype", args.dtype, "--seed", str(args.seed),
                   "--cpu-offload-gib", str(args.cpu_offload_gib)]
            if args.layout:
                cmd += ["--layout", args.layout]
            if memory == "kvpager" and args.guarantee == "equal":
                # each instance is guaranteed its static share; the rest of the time it lends it
                cmd += ["--guarantee-bytes", str(budget // len(names))]
            procs.append(subprocess.Popen(cmd, env=env))
            outs.append(out)
            instances.append(instance)
        readies = [o.replace(".json", ".ready") for o in outs]
        deadline = time.time() + 600
        while not all(os.path.exists(r) for r in readies):
            if any(p.poll() not in (None, 0) for p in procs) or time.time() > deadline:
                for p in procs:
                    p.kill()
                raise RuntimeError(f"a {memory} serving process failed to start (see its output above)")
            time.sleep(0.2)
        if memory == "kvpager":  # the device segment exists once the instances registered
            dev = "cuda0" if device.startswith("cuda") else "host0"
            subprocess.run([registry_probe.kvpager_binary(), "budget", dev, str(budget)], env=env, check=True)
        t0 = time.time() + 1.0
        open(start, "w").write(repr(t0))
        samples, top_done = [], False
        while any(p.poll() is None for p in procs):
            now = time.time() - t0
            if memory == "kvpager":
                samples.append((now, registry_probe.mapped_bytes(set(instances), env)))
                if not top_done and now > args.phase_s * 1.5 and args.plots:
                    registry_probe.capture_top(os.path.join(args.plots, "multimodel_kvpager_top.txt"), env)
                    top_done = True
            time.sleep(0.2)
        if any(p.returncode != 0 for p in procs):
            raise RuntimeError(f"{memory}: serving processes exited with {[p.returncode for p in procs]}")
        results = [json.load(open(o)) for o in outs]
        for name, inst, res in zip(names, instances, results):
            res["registry_samples"] = [(t, s.get(inst)) for t, s in samples]
        report["runs"][memory] = results
    # ---- summary
    print(f"{'model':<14} {'memory':<11} {'done':>5} {'TTFT mean':>10} {'TTFT p99':>10} "
          f"{'peak-phase TTFT p99':>20} {'idle KV MiB':>12}")
    for memory, results in report["runs"].items():
        for i, res in enumerate(results):
            reqs = res["requests"]
            lo, hi = i * args.phase_s, (i + 1) * args.phase_s
            peak = [r["ttft_s"] for r in reqs if lo <= r["submitted"] < hi]
            quiet = len(names) * args.phase_s  # from here on no model peaks
            res["peak_phase_ttft_p99"] = driver.percentile(peak, 0.99)  # None with --phase-s 0
            res["low_phase_ttft_mean"] = _mean([r["ttft_s"] for r in reqs if r["submitted"] >= quiet])
            res["low_phase_requests"] = sum(r["submitted"] >= quiet for r in reqs)
            res["others_peak_ttft_mean"] = _mean(
                [r["ttft_s"] for r in reqs if r["submitted"] < quiet and not lo <= r["submitted"] < hi])
            res["others_peak_requests"] = sum(r["submitted"] < quiet and not lo <= r["submitted"] < hi
                                              for r in reqs)
            s = res["summary"]
            peak_p99 = res["peak_phase_ttft_p99"]
            print(f"{res['model']:<14} {memory:<11} {s['completed']:>5} {_fmt_ms(s['ttft_s'])}  "
                  f"{_fmt_ms(s['ttft_s'], 'p99')}  "
                  f"{'-' if peak_p99 is None else f'{peak_p99 * 1e3:.1f}':>18}  "
                  f"{res['idle']['kv_bytes'] / 2**20:11.1f}")
    for baseline in [m for m in ("stock", "stock-whole") if m in report["runs"] and "kvpager" in report["runs"]]:
        cmp_ = []
        for i, name in enumerate(names):
            s, k = report["runs"][baseline][i], report["runs"]["kvpager"][i]
            c = {"model": name,
                 "peak_ttft_p99_speedup": _ratio(s["peak_phase_ttft_p99"], k["peak_phase_ttft_p99"]),
                 "ttft_mean_speedup": s["summary"]["ttft_s"]["mean"] / k["summary"]["ttft_s"]["mean"],
                 "low_phase_ttft_mean_ratio": _ratio(s["low_phase_ttft_mean"], k["low_phase_ttft_mean"]),
                 "low_phase_requests": k["low_phase_requests"],
                 "others_peak_ttft_mean_ratio": _ratio(s["others_peak_ttft_mean"], k["others_peak_ttft_mean"]),
                 "others_peak_requests": k["others_peak_requests"]}
            cmp_.append(c)
            print(f"{name}: peak-phase TTFT p99 {baseline}/kvpager {_fmt_ratio(c['peak_ttft_p99_speedup'])}, "
                  f"TTFT mean {c['ttft_mean_speedup']:.2f}x, low load (no model peaks) "
                  f"{_fmt_ratio(c['low_phase_ttft_mean_ratio'])} ({c['low_phase_requests']} req), "
                  f"during the others' peaks {_fmt_ratio(c['others_peak_ttft_mean_ratio'])} "
                  f"({c['others_peak_requests']} req)")
        report["comparison" if baseline == "stock" else f"comparison_{baseline}"] = cmp_
    for res in report["runs"].get("kvpager", []):
        _print_memory_waits(res, len(names) * args.phase_s)
    _dump(args.json, report)
    if args.plots:
        for memory, results in report["runs"].items():
            series = {}
            for res in results:
                if memory == "kvpager":
                    series[res["instance"]] = [(t, b) for t, b in res["registry_samples"] if b is not None]
                else:
                    series[res["instance"]] = res["kv_bytes_samples"]
            plots.memory_over_time(os.path.join(args.plots, f"multimodel_memory_{memory}.png"), series,
                                   f"KV memory per model, {memory}", budget)
        series = {f"{res['model']} {memory}": [r["ttft_s"] for r in res["requests"]]
                  for memory, results in report["runs"].items() for res in results}
        plots.latency_cdfs(os.path.join(args.plots, "multimodel_ttft.png"), series, "TTFT",
                           "three models, one GPU: TTFT")
    _dump(args.json, report)
    shutil.rmtree(work, ignore_errors=True)
    for f in os.listdir("/dev/shm"):
        if f.startswith(prefix):
            os.unlink(os.path.join("/dev/shm", f))
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp):
        sp.add_argument("--json", help="write results here")
        sp.add_argument("--plots", help="write PNG plots into this directory")
        sp.add_argument("--device", help="cuda or cpu (default: cuda when present)")
        sp.add_argument("--dtype", default="bfloat16")
        sp.add_argument("--seed", type=int, default=0)

    def engine_opts(sp, num_blocks=4096):
        sp.add_argument("--num-blocks", type=int, default=num_blocks, help="KV capacity in blocks")
        sp.add_argument("--block-size", type=int, default=32)
        sp.add_argument("--max-batch-tokens", type=int, default=1024)
        sp.add_argument("--layout", choices=["per-layer", "interleaved"], default=None,
                        help="kvpager layout (default: kvpager's default)")
        sp.add_argument("--input-len", type=int, nargs=2, default=[256, 512], metavar=("LO", "HI"))
        sp.add_argument("--output-len", type=int, nargs=2, default=[64, 128], metavar=("LO", "HI"))

    sp = sub.add_parser("correctness")
    common(sp)
    sp.add_argument("--models", nargs="+", default=["tiny-gqa", "tiny-mha"])
    sp.add_argument("--layouts", nargs="+", default=["per-layer", "interleaved"])
    sp.add_argument("--max-new-tokens", type=int, default=24)
    sp.set_defaults(fn=cmd_correctness)

    sp = sub.add_parser("overhead")
    common(sp)
    engine_opts(sp)
    sp.add_argument("--model", default="llama-3.1-8b")
    sp.add_argument("--rates", type=float, nargs="+", default=[1, 4, 12])
    sp.add_argument("--duration", type=float, default=15)
    sp.add_argument("--repeat", type=int, default=2, help="runs per engine and rate (ABBA order)")
    sp.set_defaults(fn=cmd_overhead)

    sp = sub.add_parser("layout")
    common(sp)
    engine_opts(sp)
    sp.add_argument("--model", default="llama-3.1-8b")
    sp.add_argument("--requests", type=int, default=96)
    sp.add_argument("--repeat", type=int, default=2, help="mirrored rounds of the three kinds")
    sp.set_defaults(fn=cmd_layout)

    sp = sub.add_parser("multimodel")
    common(sp)
    engine_opts(sp)
    sp.add_argument("--models", nargs="+", default=["qwen3-0.6b", "llama-3.2-1b", "qwen3-1.7b"])
    sp.add_argument("--budget-gib", type=float, default=3.0, help="KV memory for all models together")
    sp.add_argument("--memory", nargs="+", default=["stock", "kvpager"],
                    choices=["stock", "stock-whole", "kvpager"],
                    help="stock: a static 1/N of the budget each; stock-whole: the whole budget "
                         "each, over-committed (attribution: the busy model's bigger batches "
                         "without kvpager); kvpager: the budget shared")
    sp.add_argument("--phase-s", type=float, default=10.0,
                    help="each model's peak phase; 0: no peaks, only the quiet phase (steady low "
                         "load: no backlog from a peak competes for the GPU)")
    sp.add_argument("--peak-rate", type=float, default=12.0)
    sp.add_argument("--low-rate", type=float, default=0.5,
                    help="requests/s of a model outside its peak, and of all in the quiet phase")
    sp.add_argument("--quiet-s", type=float, default=20.0,
                    help="after the peaks: every model at --low-rate (low load on the GPU)")
    sp.add_argument("--idle-s", type=float, default=3.0)
    sp.add_argument("--reserve-pages", type=int, default=1)
    sp.add_argument("--max-idle-pages", type=int, default=2)
    sp.add_argument("--guarantee", choices=["equal", "none"], default="equal",
                    help="kvpager instances: each guaranteed budget/N (lent while unused), or "
                         "none (first come, first served)")
    sp.add_argument("--cpu-offload-gib", type=float, default=0.0,
                    help="every engine: pinned host pool preempted requests swap to (0: recompute)")
    sp.set_defaults(fn=cmd_multimodel)

    sp = sub.add_parser("serve-one", help=argparse.SUPPRESS)
    common(sp)
    engine_opts(sp)
    for flag in ("--model", "--memory", "--trace", "--out", "--ready", "--start", "--instance"):
        sp.add_argument(flag, required=True)
    sp.add_argument("--idle-s", type=float, default=3.0)
    sp.add_argument("--reserve-pages", type=int, default=1)
    sp.add_argument("--max-idle-pages", type=int, default=2)
    sp.add_argument("--guarantee-bytes", type=int, default=0)
    sp.add_argument("--cpu-offload-gib", type=float, default=0.0)
    sp.set_defaults(fn=cmd_serve_one)

    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
