"""The test oracle for `kvpager kvbench` on NIXL KVBench's own example files.

Written independently of kvpager's C++: the facts are NIXL KVBench's model and config files
(ai-dynamo/nixl, benchmark/kvbench/examples/, typed in below), and `upstream()` redoes
KVBench's arithmetic step for step, in Python floats where KVBench uses floats:

  models/llama3_1.py  Llama3_1.get_kv_size_per_token, Llama3_1.get_io_size
  models/qwen3.py     Qwen3.get_kv_size_per_token,    Qwen3.get_io_size
  models/gpt_oss.py   GptOss.get_kv_size_per_token,   GptOss.get_io_size
  models/deepseek_r1.py DeepSeekR1.get_kv_size_per_token, DeepSeekR1.get_io_size
  models/utils.py     get_precision_size, get_batch_size
  commands/nixlbench.py NIXLBench.configure_buffer_size (total = max_batch x max_block)

`kvpager()` applies the differences models/README.md lists (whole layers per pipeline stage, a
KV head replicated rather than split, the MLA latent on every TP rank, exact integer batch) and
`differences()` says which of them a pair meets; a pair that meets none must come out the same
both ways (check_oracle asserts it), so each difference is one that README.md names.
"""

import math
from fractions import Fraction

# benchmark/kvbench/examples/model_*.yaml: file -> fields, as upstream writes them.
MODELS = {
    "model_deepseek_r1.yaml": dict(
        model_name="DEEPSEEK_R1", num_layers=61, num_query_heads=128,
        query_head_dimension=128, embedding_dimension=7168, rope_mla_dimension=64,
        mla_latent_vector_dimension=512, num_model_params=671000000000),
    "model_gpt_oss_120b.yaml": dict(
        model_name="GPT_OSS_120B", num_layers=36, num_query_heads=64, num_kv_heads=8,
        query_head_dimension=64, num_model_params=116800000000),
    "model_gpt_oss_20b.yaml": dict(
        model_name="GPT_OSS_20B", num_layers=24, num_query_heads=64, num_kv_heads=8,
        query_head_dimension=64, num_model_params=5100000000),
    "model_llama_3_1_70b.yaml": dict(
        model_name="LLAMA3.1_70B", num_layers=80, num_query_heads_with_mha=64,
        query_head_dimension=128, gqa_num_queries_in_group=8, num_model_params=70000000000),
    "model_llama_3_1_8b.yaml": dict(
        model_name="LLAMA3.1_8B", num_layers=32, num_query_heads_with_mha=32,
        query_head_dimension=128, gqa_num_queries_in_group=4, num_model_params=8000000000),
    "model_qwen3_235b_a22b.yaml": dict(
        model_name="QWEN3_235B_A22B", num_layers=94, num_query_heads=64, num_kv_heads=4,
        query_head_dimension=128, num_model_params=235000000000),
    "model_qwen3_8b.yaml": dict(
        model_name="QWEN3_8B", num_layers=36, num_query_heads=32, num_kv_heads=8,
        query_head_dimension=128, num_model_params=8200000000),
}


def _config(tp, pp, access, isl=1000, osl=100, page_size=16):
    return dict(tp_size=tp, pp_size=pp, model_quant_mode="fp8", kvcache_quant_mode="fp8",
                isl=isl, osl=osl, num_requests=10, hardware="H100", backend="SGLANG",
                access_pattern=access, page_size=page_size)


# benchmark/kvbench/examples/{block,layer}-tp*-pp*.yaml. Two are not like the others upstream:
# block-tp8-pp16 has isl 8192 / osl 2048, and layer-tp8-pp8 ends in `page_size: 1`.
CONFIGS = {}
for _access in ("block", "layer"):
    for _tp, _pps in ((1, (1, 2, 4, 8, 16)), (8, (2, 4, 8, 16, 32))):
        for _pp in _pps:
            CONFIGS[f"{_access}-tp{_tp}-pp{_pp}.yaml"] = _config(_tp, _pp, _access)
CONFIGS["block-tp8-pp16.yaml"].update(isl=8192, osl=2048)
CONFIGS["layer-tp8-pp8.yaml"].update(page_size=1)


def precision_size(mode):
    """models/utils.py get_precision_size."""
    sizes = {"fp8": 1, "int8": 1, "fp16": 2, "bfloat16": 2}
    if mode not in sizes:
        raise ValueError(f"Unsupported precision: {mode}")
    return sizes[mode]


def is_mla(m):
    return "mla_latent_vector_dimension" in m


def kv_heads(m):
    """KV heads as upstream's GQA classes see them (Llama3_1: a float quotient)."""
    if "num_kv_heads" in m:
        return m["num_kv_heads"]
    return m["num_query_heads_with_mha"] / m["gqa_num_queries_in_group"]


def upstream_kv_size_per_token(m, c, token_count=1):
    """get_kv_size_per_token of the model's class. GQA classes use model_quant_mode."""
    L = m["num_layers"]
    if is_mla(m):  # DeepSeekR1.get_kv_size_per_token
        return int((m["rope_mla_dimension"] + m["mla_latent_vector_dimension"])
                   * precision_size(c["kvcache_quant_mode"]) * L) * token_count
    # Llama3_1 / Qwen3 / GptOss.get_kv_size_per_token
    return int(L * kv_heads(m) * m["query_head_dimension"] * 2
               * precision_size(c["model_quant_mode"]) * token_count)


def upstream_io_size(m, c, page_size=1):
    """get_io_size of the model's class."""
    L, tp, pp = m["num_layers"], c["tp_size"], c["pp_size"]
    kv = int(upstream_kv_size_per_token(m, c) / L)
    if kv <= 0:
        raise ValueError("Invalid KV Size: 0")
    if is_mla(m):  # DeepSeekR1.get_io_size: float division by tp, whole layers per stage
        io = kv / tp
        if c["access_pattern"] == "block":
            io = io * math.ceil(L / pp)
        return int(io * page_size)
    io = int(kv / tp)  # Llama3_1 / Qwen3 / GptOss.get_io_size: fractional layers per stage
    if c["access_pattern"] == "block":
        io = int(io * (L / pp))
    return int(io * page_size)


def upstream_batch_size(m, c, io_size):
    """models/utils.py get_batch_size (float division, then ceil)."""
    return math.ceil((upstream_kv_size_per_token(m, c, int(c["isl"])) / io_size)
                     * c["num_requests"])


def upstream(m, c):
    """What NIXL KVBench prints: iosize, kvcache/plan block and batch, total buffer."""
    block = upstream_io_size(m, c, c["page_size"])
    batch = upstream_batch_size(m, c, block)
    return dict(io_per_token=upstream_io_size(m, c, 1), block=block, batch=batch,
                total_buffer=batch * block)


def kvpager(m, c):
    """The same figures with the differences models/README.md lists, in exact integers."""
    L, tp, pp = m["num_layers"], c["tp_size"], c["pp_size"]
    elem = precision_size(c["kvcache_quant_mode"])
    if is_mla(m):
        layer_all = (m["mla_latent_vector_dimension"] + m["rope_mla_dimension"]) * elem
        layer_gpu = layer_all  # the latent is not split over TP ranks
    else:
        heads = kv_heads(m)
        assert heads == int(heads)
        heads = int(heads)
        layer_all = 2 * heads * m["query_head_dimension"] * elem
        layer_gpu = 2 * max(1, -(-heads // tp)) * m["query_head_dimension"] * elem
    stage_layers = -(-L // pp)  # whole layers: the busiest stage's share
    io = layer_gpu * stage_layers if c["access_pattern"] == "block" else layer_gpu
    block = io * c["page_size"]
    want = layer_all * L * c["isl"] * c["num_requests"]
    batch = -(-want // block)
    return dict(io_per_token=io, block=block, batch=batch, total_buffer=batch * block)


def differences(m, c):
    """The README.md differences this pair meets (empty: kvpager must print upstream's)."""
    L, tp, pp = m["num_layers"], c["tp_size"], c["pp_size"]
    out = []
    if is_mla(m):
        if tp > 1:
            out.append("MLA latent not divided by TP")
    else:
        heads = kv_heads(m)
        if heads % tp != 0:
            out.append("KV head replicated, not split, when TP exceeds the KV heads")
        if c["access_pattern"] == "block" and L % pp != 0:
            out.append("GQA pipeline stage rounded up to whole layers")
    if c["model_quant_mode"] != c["kvcache_quant_mode"] and not is_mla(m):
        out.append("GQA KV bytes from kvcache_quant_mode, not model_quant_mode")
    if not out:
        # Upstream's float batch against the exact quotient: a difference of its own if any.
        u = upstream(m, c)
        exact = Fraction(upstream_kv_size_per_token(m, c, c["isl"]) * c["num_requests"],
                         u["block"])
        if math.ceil(exact) != u["batch"]:
            out.append("batch from exact integers, not a float quotient")
    return out


def check_oracle():
    """The oracle against upstream's own figures: test/test_kvcache.py and the seed README."""
    llama8, llama70 = MODELS["model_llama_3_1_8b.yaml"], MODELS["model_llama_3_1_70b.yaml"]
    r1 = MODELS["model_deepseek_r1.yaml"]
    # test_kvcache.py test_kvcache_size: get_kv_size_per_token(1)
    for name, c in CONFIGS.items():
        if name.startswith("block-") or name in {f"layer-tp1-pp{p}.yaml" for p in (1, 2, 4, 8)}:
            assert upstream_kv_size_per_token(llama8, c) == 65536
            assert upstream_kv_size_per_token(llama70, c) == 163840
    for pp in (2, 4, 8, 16, 32):
        assert upstream_kv_size_per_token(r1, CONFIGS[f"block-tp8-pp{pp}.yaml"]) == 35136
    # test_kvcache.py test_io_size: get_io_size() (page_size 1)
    for pp, io in ((2, 10240), (4, 5120), (8, 2560), (16, 1280), (32, 640)):
        assert upstream_io_size(llama70, CONFIGS[f"block-tp8-pp{pp}.yaml"]) == io
        assert upstream_io_size(llama70, CONFIGS[f"layer-tp8-pp{pp}.yaml"]) == 256
    # The seed README's DeepSeek-R1 examples (isl 10000, page 256).
    seed = dict(_config(1, 16, "block", isl=10000, page_size=256))
    assert (upstream(r1, seed)["batch"], upstream(r1, seed)["block"]) == (5958, 589824)
    seed.update(access_pattern="layer")
    assert (upstream(r1, seed)["batch"], upstream(r1, seed)["block"]) == (23829, 147456)
    seed.update(access_pattern="block", pp_size=32, num_requests=100)
    assert (upstream(r1, seed)["batch"], upstream(r1, seed)["block"]) == (119141, 294912)
    assert upstream(r1, seed)["total_buffer"] == 119141 * 294912
    seed.update(pp_size=8, num_requests=1)
    assert (upstream(r1, seed)["batch"], upstream(r1, seed)["io_per_token"]) == (298, 4608)
    # A pair that meets no listed difference comes out the same both ways.
    assert len(MODELS) == 7 and len(CONFIGS) == 20
    for m in MODELS.values():
        for c in CONFIGS.values():
            if not differences(m, c):
                assert upstream(m, c) == kvpager(m, c), (m["model_name"], c)


if __name__ == "__main__":
    check_oracle()
    for mf, m in MODELS.items():
        for cf, c in sorted(CONFIGS.items()):
            u, k = upstream(m, c), kvpager(m, c)
            print(f"{mf:28} {cf:20} up io={u['io_per_token']:6} blk={u['block']:8} "
                  f"bat={u['batch']:7} | kv io={k['io_per_token']:6} blk={k['block']:8} "
                  f"bat={k['batch']:7} {'; '.join(differences(m, c))}")
