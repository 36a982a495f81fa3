"""vLLM 0.26 on kvpager memory, on a GPU (skipped without one or without vLLM).

Each engine runs in its own process (tests/python/vllm_engine_run.py) with a tiny Llama of
dummy weights. kvpager is switched on as a user would: KVPAGER_VLLM=1 and kvpager's
``vllm.general_plugins`` entry point (written into a temporary site directory, as ``pip
install`` would), so the plugin loads in vLLM's engine-core process by itself.

* identity: greedy tokens on kvpager equal stock vLLM's, for GQA and MHA shapes, prefix caching
  on and off, both layouts, both model runners, Triton and FlashAttention-3;
* two engines under one budget: memory moves from the busy one to the other, every request
  completes, the budget is never exceeded.
"""

import json
import os
import subprocess
import sys
import tempfile

import pytest

from conftest import require_vllm_on_gpu

require_vllm_on_gpu()

from kvpager.integrations.vllm.__main__ import install_entry_point  # noqa: E402 - after require_vllm_on_gpu(), which skips without vLLM

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = os.path.join(HERE, "vllm_engine_run.py")
OUT = os.environ.get("KVPAGER_VLLM_TEST_OUT") or tempfile.mkdtemp(prefix="kvpager-vllm-")


def env_for(prefix):
    site = os.path.join(OUT, "site")
    install_entry_point(site)
    import kvpager

    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(kvpager.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [site, pkg_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.update(KVPAGER_SHM_PREFIX=prefix, VLLM_NO_USAGE_STATS="1", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env.pop("KVPAGER_VLLM", None)
    return env


def run_all(configs, parallel=6, shared_prefix=None, failures=None):
    """Runs the configs (name -> dict), `parallel` at a time; returns name -> result. A run that
    fails fails the test, or with `failures` (a dict) is recorded there: name -> its log's tail."""
    pending, results, running = list(configs.items()), {}, []
    while pending or running:
        while pending and len(running) < parallel:
            name, cfg = pending.pop(0)
            out = os.path.join(OUT, f"{name}.json")
            log = open(os.path.join(OUT, f"{name}.log"), "w")  # noqa: SIM115 - closed on exit
            prefix = shared_prefix or f"kvt{os.getpid() % 100000}-{sorted(configs).index(name)}-"
            p = subprocess.Popen([sys.executable, RUN, "--config", json.dumps(cfg), "--out", out],
                                 env=env_for(prefix), stdout=log, stderr=subprocess.STDOUT)
            running.append((name, p, out, log))
        name, p, out, log = running.pop(0)
        rc = p.wait(timeout=420)
        log.close()
        if rc != 0 or not os.path.exists(out):
            with open(log.name) as f:
                tail = f.read()[-4000:]
            if failures is None:
                pytest.fail(f"engine run {name} failed (exit {rc}):\n{tail}")
            failures[name] = tail
            continue
        with open(out) as f:
            results[name] = json.load(f)
    return results


# Engines in process ("inproc"): LLM.generate adds every request before the first step, so the
# batches, and with them the bf16 rounding of every GEMM, are the same in every run. In vLLM's
# engine-core process ("mp") requests reach the scheduler while it steps: the first batches
# vary from run to run, and so do stock vLLM's own logprobs (the "mp" pair measures that).
BASE = {"model": "gqa", "prefix": True, "runner": "v2", "attn": "TRITON_ATTN", "mode": "inproc",
        "kv_bytes": 1 << 30, "max_tokens": 24, "logprobs": 5,
        "weight_scale": 200.0}
PAIRS = {  # name: (stock config, kvpager config)
    "gqa-prefix-interleaved": ({}, {"layout": "interleaved"}),
    "gqa-prefix-per-layer": ({}, {"layout": "per-layer"}),
    "gqa-noprefix-interleaved": ({"prefix": False}, {"layout": "interleaved"}),
    "gqa-v1-interleaved": ({"runner": "v1"}, {"layout": "interleaved"}),
    "gqa-v1-per-layer": ({"runner": "v1", "attn": "FLASH_ATTN"}, {"layout": "per-layer"}),
    "gqa-fa3-interleaved": ({"attn": "FLASH_ATTN"}, {"layout": "interleaved"}),
    "gqa-graphs-interleaved": ({"eager": False}, {"layout": "interleaved"}),
    "mha-prefix-per-layer": ({"model": "mha"}, {"layout": "per-layer"}),
    "mha-noprefix-interleaved": ({"model": "mha", "prefix": False}, {"layout": "interleaved"}),
    # a cell that tiles no 2 MiB page: 4 MiB pages with straddlers, the warm-up's ids 1..n
    # backed through their neighbours
    "qwen3-7l-interleaved": ({"model": "qwen3-7l"}, {"layout": "interleaved"}),
}


# the other attention kinds: vLLM 0.26 may not run each of them with the bundle on this GPU
# (that is recorded, not failed); where stock runs, kvpager must match it or refuse at start
KINDS = {
    "qwen3-triton": ({"model": "qwen3"}, {"layout": "interleaved"}),
    "mla-triton": ({"model": "mla", "attn": "TRITON_MLA"}, {"layout": "interleaved"}),
    "mla-fa3": ({"model": "mla", "attn": "FLASH_ATTN_MLA"}, {"layout": "per-layer"}),
    "gemma3-triton": ({"model": "gemma3"}, {"layout": "interleaved"}),
    "gemma3-fa3-noprefix": ({"model": "gemma3", "attn": "FLASH_ATTN", "prefix": False},
                            {"layout": "per-layer"}),
}


def pair_configs(pairs):
    configs = {}
    for name, (stock, kv) in pairs.items():
        stock_cfg = {**BASE, **stock}
        configs["stock-" + name] = stock_cfg
        configs["kvpager-" + name] = {**stock_cfg, **kv, "kvpager": True, "name": name}
    return configs


def differences(s, k):
    """(pass, prompt) where tokens or the top-5 logprobs of a step differ, bit for bit."""
    where = [(p, i) for p, (sp, kp) in enumerate(zip(s["logprobs"], k["logprobs"]))
             for i, (a, b) in enumerate(zip(sp, kp)) if a != b]
    return where + [("tokens", p) for p in range(2) if s["passes"][p] != k["passes"][p]]


def check_kvpager_stats(k):
    assert all(len(o) == BASE["max_tokens"] for o in k["passes"][0])
    st = k["kv"]
    assert st["instance"] == k["config"]["name"]
    assert st["num_blocks"] == k["num_gpu_blocks"]
    assert st["mapped_bytes"] < st["virtual_bytes"] / 10, "mapped only what is used"
    if k["config"]["prefix"]:
        assert st["blocks_in_use"] > 0, "cached prefix blocks stay mapped"
    else:
        assert st["blocks_in_use"] == 0


def test_greedy_tokens_identical_to_stock_vllm():
    results = run_all(pair_configs(PAIRS))
    differ = {}
    for name in PAIRS:
        # tokens and the top-5 logprobs of every step, bit for bit (with weights scaled so
        # that attention shapes them: checked below)
        where = differences(results["stock-" + name], results["kvpager-" + name])
        if where:
            differ[name] = where
    with open(os.path.join(OUT, "identity.json"), "w") as f:
        json.dump({"differ": differ, "pairs": list(PAIRS)}, f)
    assert not differ, f"kvpager's tokens differ from stock vLLM's at (pass, prompt): {differ}"
    for name in PAIRS:
        check_kvpager_stats(results["kvpager-" + name])
    assert results["kvpager-qwen3-7l-interleaved"]["kv"]["page_bytes"] == 4 << 20
    # attention shapes the logprobs compared above (else identity would prove nothing)
    assert results["stock-gqa-prefix-per-layer"]["logprobs"] != results[
        "stock-mha-prefix-per-layer"]["logprobs"]


def test_other_attention_kinds_identical_to_stock_or_refused():
    failures = {}
    results = run_all(pair_configs(KINDS), failures=failures)
    report = {}
    for name in KINDS:
        s, k = results.get("stock-" + name), results.get("kvpager-" + name)
        if s is None:
            report[name] = "stock vLLM fails: " + failures["stock-" + name][-600:]
            continue
        if k is None:
            log = failures["kvpager-" + name]
            refusal = log.rfind("Error: kvpager:")  # LayoutError, NotImplementedError, ...
            assert refusal >= 0, f"{name}: kvpager failed where stock ran:\n{log}"
            report[name] = "kvpager refuses: " + log[refusal:][:300]
            continue
        report[name] = {"differ": differences(s, k), "kv": k["kv"]}
    with open(os.path.join(OUT, "kinds.json"), "w") as f:
        json.dump(report, f, indent=1)
    differ = {n: r["differ"] for n, r in report.items() if isinstance(r, dict) and r["differ"]}
    assert not differ, f"kvpager's outputs differ from stock vLLM's at (pass, prompt): {differ}"
    for name in KINDS:
        if isinstance(report[name], dict):
            check_kvpager_stats(results["kvpager-" + name])


def test_engine_core_process_runs_on_kvpager_and_varies_only_as_stock_does():
    """vLLM's default engine-core process (the plugin enables kvpager there by itself): every
    request completes on kvpager memory; its outputs differ from stock's no more often than
    two stock runs differ from each other (recorded in mp.json)."""
    cfg = {**BASE, "mode": "mp"}
    r = run_all({"stock-mp-a": cfg, "stock-mp-b": cfg,
                 "kvpager-mp": {**cfg, "kvpager": True, "name": "mp"}})
    check_kvpager_stats(r["kvpager-mp"])
    stock_vs_stock = differences(r["stock-mp-a"], r["stock-mp-b"])
    kvpager_vs_stock = min(differences(r["stock-mp-a"], r["kvpager-mp"]),
                           differences(r["stock-mp-b"], r["kvpager-mp"]), key=len)
    with open(os.path.join(OUT, "mp.json"), "w") as f:
        json.dump({"stock_vs_stock": stock_vs_stock, "kvpager_vs_stock": kvpager_vs_stock}, f)


def test_two_engines_share_one_budget_and_memory_follows_the_load():
    tag = f"{OUT}/two-{os.getpid()}"
    share = 512 << 20  # a burst needs about 920 MiB: more than one share, less than two
    common = {**BASE, "mode": "mp", "kvpager": True, "prefix": False, "kv_bytes": share,
              "prompts": "burst:64:1800", "max_tokens": 32, "passes": 1, "sample_s": 0.05,
              "layout": "interleaved"}
    a = {**common, "name": "engine-a", "ready_file": tag + ".a-up", "start_after": tag + ".b-up",
         "done_file": tag + ".a-done", "linger_until": tag + ".b-done"}
    b = {**common, "name": "engine-b", "ready_file": tag + ".b-up", "start_after": tag + ".a-done",
         "sleep_before_s": 1.5, "done_file": tag + ".b-done"}
    r = run_all({"engine-a": a, "engine-b": b}, parallel=2,
                shared_prefix=f"kvt{os.getpid() % 100000}-two-")
    for name, res in r.items():
        assert all(len(o) == 32 for o in res["passes"][0]), f"{name}: a request did not complete"
        samples = res["samples"]
        assert samples, f"{name}: no registry samples"
        for s in samples:
            assert s["charged"] <= s["budget"], f"{name}: device charge above the budget: {s}"
        assert max(s["budget"] for s in samples) == 2 * share  # both shares pooled

    def peak_during(res):
        (t0, t1), = res["times"]
        return max(s["held"] for s in res["samples"] if t0 <= s["t"] <= t1)
    # each engine, busy alone, held more than its own share: memory moved to it
    assert peak_during(r["engine-a"]) > share
    assert peak_during(r["engine-b"]) > share
    (_a0, _a1), = r["engine-a"]["times"]
    (b0, b1), = r["engine-b"]["times"]
    a_during_b = [s["held"] for s in r["engine-a"]["samples"] if b0 + 0.5 <= s["t"] <= b1]
    assert a_during_b and min(a_during_b) < share / 2, "the idle engine gave its memory back"
