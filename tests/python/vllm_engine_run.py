"""One vLLM engine run for the GPU tests of the vLLM integration (not a test itself).

    python3 vllm_engine_run.py --config JSON --out FILE

The config: model (a key of MODELS: tiny GQA/MHA Llamas, Qwen3, MLA, Gemma 3; dummy weights),
kvpager (bool), layout, prefix (prefix caching on/off), runner ("v1" | "v2"), attn (TRITON_ATTN |
FLASH_ATTN), mode ("mp": vLLM's engine-core process, kvpager enabled there by its
vllm.general_plugins entry point; "inproc": the engine in this process, every request added
before the first step, so the batches are the same in every run), eager (default true; false:
CUDA graphs and compilation), kv_bytes (stock's KV size, kv_cache_memory_bytes), weight_scale
(dummy weights times this; default 1), prompts ("shared": 8 prompts, 4 sharing a 300-token
prefix, generated twice; "burst:N:LEN": N prompts of LEN tokens), max_tokens, sample_s
(registry sampling period; 0 none), ready_file (created once the engine is up), start_after (a
file to wait for before generating), done_file (created when generation is over), linger_until
(a file to wait for before leaving). Writes JSON: output token ids per pass, kvpager
statistics, samples (KVPAGER_VLLM_SAMPLES lines) and times.
"""

import argparse
import json
import os
import sys
import tempfile
import time

LLAMA = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 1024,
    "intermediate_size": 2816, "num_hidden_layers": 8, "head_dim": 64, "rope_theta": 10000.0,
    "hidden_act": "silu", "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": False,
}
MODELS = {  # tiny shapes of each attention kind, dummy weights
    "gqa": {**LLAMA, "num_attention_heads": 16, "num_key_value_heads": 4},
    "mha": {**LLAMA, "num_attention_heads": 8, "num_key_value_heads": 8},
    # Qwen3-0.6B's attention (GQA 16/8, head_dim 128, q/k norms), fewer layers
    "qwen3": {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 1024,
              "intermediate_size": 3072, "num_hidden_layers": 8, "num_attention_heads": 16,
              "num_key_value_heads": 8, "head_dim": 128, "rope_theta": 1000000.0,
              "hidden_act": "silu", "attention_bias": False, "tie_word_embeddings": True},
    # the same with 7 layers: a 448 KiB cell that tiles no 2 MiB page (nor does Qwen3-0.6B's
    # 28 layers' 1.75 MiB): 4 MiB pages of 9 blocks and a straddler, which the warm-up backs
    # through its neighbours (worker.handle_for_cell)
    "qwen3-7l": {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 1024,
                 "intermediate_size": 3072, "num_hidden_layers": 7, "num_attention_heads": 16,
                 "num_key_value_heads": 8, "head_dim": 128, "rope_theta": 1000000.0,
                 "hidden_act": "silu", "attention_bias": False, "tie_word_embeddings": True},
    # DeepSeek-V2-Lite's MLA (latent 512 + rope 64, 16 heads, no q LoRA); dense MLPs
    "mla": {"architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2",
            "hidden_size": 1024, "intermediate_size": 2816, "moe_intermediate_size": 512,
            "num_hidden_layers": 4, "num_attention_heads": 16, "num_key_value_heads": 16,
            "kv_lora_rank": 512, "q_lora_rank": None, "qk_nope_head_dim": 128,
            "qk_rope_head_dim": 64, "v_head_dim": 128, "n_routed_experts": 8,
            "n_shared_experts": 1, "num_experts_per_tok": 2, "first_k_dense_replace": 4,
            "moe_layer_freq": 1, "topk_method": "greedy", "n_group": 1, "topk_group": 1,
            "norm_topk_prob": False, "routed_scaling_factor": 1.0, "scoring_func": "softmax",
            "rope_theta": 10000.0, "hidden_act": "silu", "attention_bias": False,
            "tie_word_embeddings": False},
    # Gemma 3's hybrid attention: 5 sliding-window (256) layers to 1 global, two KV-cache groups
    "gemma3": {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
               "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 6,
               "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 128,
               "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "sliding_window": 256,
               "layer_types": ["sliding_attention"] * 5 + ["full_attention"],
               "query_pre_attn_scalar": 128, "hidden_activation": "gelu_pytorch_tanh",
               "final_logit_softcapping": None, "attn_logit_softcapping": None,
               "tie_word_embeddings": True, "pad_token_id": 0},
}


def model_dir(name):
    cfg = {"vocab_size": 32000, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
           "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2,
           "initializer_range": 0.02, **MODELS[name]}
    d = os.path.join(tempfile.gettempdir(), f"kvpager-vllm-tiny-{name}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    return d


def token_ids(n, seed):
    x, out = seed, []
    for _ in range(n):
        x = (1103515245 * x + 12345) % (1 << 31)
        out.append(10 + x % 31990)
    return out


def prompts(spec):
    if spec == "shared":
        prefix = token_ids(300, 7)
        return [prefix + token_ids(n, 100 + n) for n in (1, 40, 77, 130)] + [
            token_ids(n, 200 + n) for n in (5, 64, 333, 1000)]
    _, count, length = spec.split(":")
    return [token_ids(int(length), 1000 + i) for i in range(int(count))]


def scale_weights(worker_self, factor):
    """vLLM's dummy weights are uniform in +-1e-3: logits come out flat and attention changes
    nothing. Scaled (identically in every run) they make the outputs depend on the KV cache."""
    import torch

    with torch.no_grad():
        for p in worker_self.model_runner.model.parameters():
            p.mul_(factor)
    return True


def kv_stats(worker_self):
    from kvpager.integrations.vllm import worker

    kv = worker.current()
    st = kv.cache.stats()
    st["device_budget"] = kv.cache.device_budget()
    st["instance"] = kv.instance
    return st


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    c = json.loads(a.config)
    samples_file = a.out + ".samples"
    if c.get("kvpager"):
        os.environ["KVPAGER_VLLM"] = "1"
        if c.get("sample_s"):
            os.environ["KVPAGER_VLLM_SAMPLES"] = f"{samples_file}:{c['sample_s']}"
        os.environ["KVPAGER_LAYOUT"] = c.get("layout", "interleaved")
    os.environ["VLLM_USE_V2_MODEL_RUNNER"] = "1" if c.get("runner", "v2") == "v2" else "0"
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if c.get("mode", "mp") == "mp" else "0"
    os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
    from vllm import LLM, SamplingParams

    t0 = time.time()
    llm = LLM(model=model_dir(c.get("model", "gqa")), load_format="dummy", skip_tokenizer_init=True,
              enforce_eager=bool(c.get("eager", True)), seed=0, dtype="bfloat16",
              max_model_len=4096,
              enable_prefix_caching=bool(c.get("prefix", True)), gpu_memory_utilization=0.05,
              kv_cache_memory_bytes=int(c.get("kv_bytes", 1 << 30)),
              served_model_name=c.get("name", "tiny"),
              attention_config={"backend": c.get("attn", "TRITON_ATTN")})
    if float(c.get("weight_scale", 1.0)) != 1.0:
        llm.collective_rpc(scale_weights, args=(float(c["weight_scale"]),))
    res = {"config": c, "init_s": round(time.time() - t0, 2),
           "num_gpu_blocks": llm.llm_engine.vllm_config.cache_config.num_gpu_blocks}
    if c.get("ready_file"):
        open(c["ready_file"], "w").close()
    if c.get("start_after"):
        while not os.path.exists(c["start_after"]):
            time.sleep(0.05)
    time.sleep(float(c.get("sleep_before_s", 0)))
    sp = SamplingParams(max_tokens=int(c.get("max_tokens", 16)), temperature=0.0, ignore_eos=True,
                        detokenize=False, logprobs=int(c.get("logprobs", 0)) or None)
    ps = [{"prompt_token_ids": p} for p in prompts(c.get("prompts", "shared"))]
    passes, times, logprobs = [], [], []
    for _ in range(int(c.get("passes", 2))):
        t = time.time()
        outs = llm.generate(ps, sp, use_tqdm=False)
        times.append((t, time.time()))
        passes.append([list(o.outputs[0].token_ids) for o in outs])
        if sp.logprobs:  # the top logprobs of every generated token: (token, float) lists
            logprobs.append([[sorted((t, lp.logprob) for t, lp in step.items())
                              for step in o.outputs[0].logprobs] for o in outs])
    if c.get("done_file"):
        open(c["done_file"], "w").close()
    if c.get("linger_until"):  # stay registered (and sampled) until another engine is done
        deadline = time.time() + 300
        while not os.path.exists(c["linger_until"]) and time.time() < deadline:
            time.sleep(0.05)
    samples = []
    if os.path.exists(samples_file):
        with open(samples_file) as f:
            samples = [json.loads(line) for line in f if line.strip()]
    res.update(passes=passes, times=times, samples=samples, logprobs=logprobs)
    if c.get("kvpager"):
        res["kv"] = llm.collective_rpc(kv_stats)[0]
    with open(a.out, "w") as f:
        json.dump(res, f)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
