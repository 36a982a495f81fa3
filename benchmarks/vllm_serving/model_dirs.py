"""Config-only model directories for `vllm serve --load-format dummy --skip-tokenizer-init`:
the shapes shipped in benchmarks/serving/models/*.json (keys starting with "_" are notes) with
the architecture vLLM needs, written once per name. Nothing is downloaded; vLLM fills the weights
with its dummy values, and prompts are token ids."""

from __future__ import annotations

import json
import os

MODELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "serving", "models")
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM",
                 "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}


def shape(name: str) -> dict:
    """The shipped config of ``name`` without its notes; ValueError naming the shipped ones."""
    path = os.path.join(MODELS_DIR, f"{name}.json")
    if not os.path.exists(path):
        known = sorted(f[:-5] for f in os.listdir(MODELS_DIR) if f.endswith(".json"))
        raise ValueError(f"unknown model {name!r}; shipped: {', '.join(known)}")
    with open(path) as f:
        return {k: v for k, v in json.load(f).items() if not k.startswith("_")}


def model_dir(name: str, root: str) -> str:
    """``root``/``name``/config.json for vLLM (bf16); returns the directory."""
    config = shape(name)
    config.setdefault("architectures", [ARCHITECTURES[config["model_type"]]])
    config.setdefault("torch_dtype", "bfloat16")
    path = os.path.join(root, name)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    return path
