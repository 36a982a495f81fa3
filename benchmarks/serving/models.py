"""Model shapes shipped as config files (models/*.json), built with random weights.

Nothing is downloaded: ``build_model(name)`` makes ``AutoModelForCausalLM.from_config`` of the
shape in ``models/<name>.json`` (keys starting with "_" are notes), in bf16 directly on the
device, with weights drawn from a seeded generator, so two processes (or two runs) that build
the same name with the same seed hold the same model bit for bit.
"""

import json
import os
from typing import List

MODELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")


def model_names() -> List[str]:
    return sorted(f[:-5] for f in os.listdir(MODELS_DIR) if f.endswith(".json"))


def load_config(name: str):
    """The transformers config of a shipped shape; ValueError naming the known ones."""
    from transformers import AutoConfig

    path = os.path.join(MODELS_DIR, f"{name}.json")
    if not os.path.exists(path):
        raise ValueError(f"unknown model {name!r}; shipped: {', '.join(model_names())}")
    with open(path) as f:
        fields = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    model_type = fields.pop("model_type")
    return AutoConfig.for_model(model_type, **fields)


def build_model(name: str, device="cuda", dtype="bfloat16", seed: int = 0,
                attn_implementation: str = "paged|sdpa"):
    """The model of shape ``name`` with seeded random weights, in eval mode on ``device``."""
    import torch
    from transformers import AutoModelForCausalLM

    config = load_config(name)
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(
            config, dtype=torch_dtype, attn_implementation=attn_implementation)
    return model.eval()


def kv_bytes_per_token(name: str, dtype_bytes: int = 2) -> int:
    """K and V of every layer for one token."""
    c = load_config(name)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    return 2 * c.num_hidden_layers * kv_heads * head_dim * dtype_bytes
