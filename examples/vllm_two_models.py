"""Two vLLM engines on one GPU under one kvpager budget: memory follows the load.

    python examples/vllm_two_models.py                 # tiny dummy-weight Llamas, ~2 minutes
    python examples/vllm_two_models.py --model PATH    # any vLLM model directory (both engines)

Needs a GPU, vLLM 0.26 and kvpager (pip-installed, or the build tree on PYTHONPATH: the example
then installs kvpager's vLLM entry point into a temporary directory for its engines). Each
engine is its own process running ``vllm.LLM`` with KVPAGER_VLLM=1, as ``vllm serve`` would:
each pools the KV share stock vLLM would give it (``--share-mib``) into one device budget.
Engine A serves a burst while B idles, then B while A idles; every half second the example
prints what each engine holds, read from kvpager's registry (``kvpager top`` shows the same:
run it with the KVPAGER_SHM_PREFIX printed at start). Each busy engine holds more than its
share, the idle one gives its memory back, and the device's charge never exceeds the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 1024,
    "intermediate_size": 2816, "num_hidden_layers": 8, "num_attention_heads": 16,
    "num_key_value_heads": 4, "head_dim": 64, "vocab_size": 32000,
    "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "bos_token_id": 1, "eos_token_id": 2,
}


def tiny_model() -> str:
    d = os.path.join(tempfile.gettempdir(), "kvpager-example-tiny-llama")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(TINY_LLAMA, f)
    return d


def prompt(length: int, seed: int) -> list[int]:
    x, out = seed, []
    for _ in range(length):
        x = (1103515245 * x + 12345) % (1 << 31)
        out.append(10 + x % 31000)
    return out


def wait_for(path: str, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while not os.path.exists(path):
        if time.time() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {path}")
        time.sleep(0.05)


def run_engine(a) -> None:
    """One engine (a child process): start, wait for its turn, serve a burst, wait to exit."""
    from vllm import LLM, SamplingParams

    dummy = a.model == tiny_model()
    llm = LLM(model=a.model, served_model_name=a.engine, load_format="dummy" if dummy else "auto",
              skip_tokenizer_init=True, enforce_eager=True, max_model_len=4096,
              gpu_memory_utilization=a.gpu_memory_utilization,
              kv_cache_memory_bytes=a.share_mib << 20,
              attention_config={"backend": "TRITON_ATTN"})
    open(f"{a.signals}.{a.engine}.up", "w").close()
    wait_for(f"{a.signals}.{a.engine}.go")
    params = SamplingParams(max_tokens=a.max_tokens, temperature=0.0, ignore_eos=True,
                            detokenize=False)
    prompts = [{"prompt_token_ids": prompt(a.prompt_len, 1000 + i)} for i in range(a.requests)]
    outputs = llm.generate(prompts, params, use_tqdm=False)
    done = sum(len(o.outputs[0].token_ids) == a.max_tokens for o in outputs)
    with open(f"{a.signals}.{a.engine}.done", "w") as f:
        json.dump({"completed": done, "requests": a.requests}, f)
    wait_for(f"{a.signals}.exit")
    os._exit(0)


def entry_point_site() -> str | None:
    """A directory holding kvpager's vllm.general_plugins entry point when the installed
    kvpager does not declare one (the build tree), else None."""
    from importlib.metadata import entry_points

    if any(e.name == "kvpager" for e in entry_points(group="vllm.general_plugins")):
        return None
    from kvpager.integrations.vllm.__main__ import install_entry_point

    site = tempfile.mkdtemp(prefix="kvpager-vllm-site-")
    install_entry_point(site)
    return site


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model directory (default: a tiny Llama)")
    ap.add_argument("--share-mib", type=int, default=512, help="each engine's KV share")
    ap.add_argument("--requests", type=int, default=64, help="requests in each burst")
    ap.add_argument("--prompt-len", type=int, default=1800)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.05)
    ap.add_argument("--prefix", default=f"kvpager-example-{os.getpid()}-",
                    help="registry namespace (KVPAGER_SHM_PREFIX) of the two engines")
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    ap.add_argument("--signals", help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.model = a.model or tiny_model()
    if a.engine:
        run_engine(a)
        return

    import kvpager

    signals = os.path.join(tempfile.mkdtemp(prefix="kvpager-example-"), "s")
    env = dict(os.environ, KVPAGER_VLLM="1", KVPAGER_SHM_PREFIX=a.prefix,
               VLLM_USE_FLASHINFER_SAMPLER=os.environ.get("VLLM_USE_FLASHINFER_SAMPLER", "0"))
    site = entry_point_site()
    if site:
        pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(kvpager.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(
            [site, pkg_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    print(f"registry namespace: KVPAGER_SHM_PREFIX={a.prefix}  (watch: kvpager top)")
    names = ["model-a", "model-b"]
    children = [subprocess.Popen(
        [sys.executable, __file__, "--engine", n, "--signals", signals, "--model", a.model,
         "--share-mib", str(a.share_mib), "--requests", str(a.requests),
         "--prompt-len", str(a.prompt_len), "--max-tokens", str(a.max_tokens),
         "--gpu-memory-utilization", str(a.gpu_memory_utilization)], env=env)
        for n in names]
    try:
        for n in names:
            wait_for(f"{signals}.{n}.up")
        t0, last_print = time.time(), 0.0
        peaks = dict.fromkeys(names, 0)
        max_charge, budget = 0, 0
        print(f"both engines up; each pooled a {a.share_mib} MiB share")
        print("   t  busy     model-a held  model-b held   device charged / budget")
        for busy in names:
            open(f"{signals}.{busy}.go", "w").close()
            while not os.path.exists(f"{signals}.{busy}.done"):
                snap = kvpager.registry_snapshot(a.prefix)
                held = {i["name"]: i["mapped_bytes"] for i in snap["instances"]}
                peaks[busy] = max(peaks[busy], held.get(busy, 0))
                for d in snap["devices"]:
                    max_charge = max(max_charge, d["charged_bytes"])
                    budget = d["budget_bytes"]
                now = time.time() - t0
                if now - last_print >= 0.5:
                    last_print = now
                    dev = snap["devices"][0] if snap["devices"] else {"charged_bytes": 0,
                                                                      "budget_bytes": 0}
                    print(f"{now:5.1f}  {busy}  {held.get('model-a', 0) / 2**20:9.0f} MiB"
                          f"  {held.get('model-b', 0) / 2**20:9.0f} MiB"
                          f"   {dev['charged_bytes'] / 2**20:7.0f} / "
                          f"{dev['budget_bytes'] / 2**20:.0f} MiB")
                time.sleep(0.05)
        results = {}
        for n in names:
            with open(f"{signals}.{n}.done") as f:
                results[n] = json.load(f)
        print("summary:")
        for n in names:
            print(f"  {n}: {results[n]['completed']}/{results[n]['requests']} requests "
                  f"completed; held up to {peaks[n] / 2**20:.0f} MiB during its burst "
                  f"(its share: {a.share_mib} MiB)")
        print(f"  device: charge peaked at {max_charge / 2**20:.0f} MiB of a "
              f"{budget / 2**20:.0f} MiB budget")
    finally:
        open(f"{signals}.exit", "w").close()
        for c in children:
            try:
                c.wait(timeout=60)
            except subprocess.TimeoutExpired:
                c.kill()


if __name__ == "__main__":
    main()
