#!/usr/bin/env python3
"""Three models, three processes, one GPU: stock transformers vs kvpager, one command.

    python3 examples/serve_three_models.py            # on a GPU machine, after scripts/setup.sh

Each model (Qwen3-0.6B-, Llama-3.2-1B- and Qwen3-1.7B-shaped, random weights: nothing is
downloaded) runs transformers' continuous batching in its own process. Load comes in staggered
bursts: each model has its peak (4 requests/s, prompts of 512-1024 tokens) in a different
10 s phase and a trickle (0.3/s) otherwise, then 30 s of low load (all at 0.3/s); 1.5 GiB of KV
memory for the three. Twice:
  * stock: each engine gets a static third of the KV budget (what you do today);
  * kvpager: every engine may use the whole budget; kvpager's shared registry keeps the sum
    within it, so the busy model borrows what the idle ones do not use. Each is guaranteed its
    third: when it needs memory a borrower holds, the borrower gives it back (frees pages,
    preempts its newest requests) instead of starving it (--guarantee none: first come, first
    served). Every engine, stock or kvpager, swaps preempted requests to a 2 GiB pinned host
    pool and back (--cpu-offload-gib 0: transformers' default, recompute them).
It prints TTFT per model (mean, p99, p99 in the model's own peak phase), the speed-up at the
peak, at low load and during the other models' peaks, and the KV memory each process still holds
when idle. Options are benchmarks/serving/bench.py
multimodel's (--budget-gib, --phase-s, --peak-rate, --json, --plots, ...).
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _find_kvpager():
    """Use the build tree's package and binary unless the environment names others."""
    build = os.environ.get("KVPAGER_BUILD_DIR", os.path.join(ROOT, "build"))
    if "KVPAGER_BINARY" not in os.environ and os.path.exists(os.path.join(build, "kvpager")):
        os.environ["KVPAGER_BINARY"] = os.path.join(build, "kvpager")
    try:
        import kvpager  # noqa: F401
    except ImportError:
        sys.path.insert(0, os.path.join(build, "python"))
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (os.path.join(build, "python"), os.environ.get("PYTHONPATH")) if p)


def main(argv):
    _find_kvpager()
    sys.path.insert(0, os.path.join(ROOT, "benchmarks", "serving"))
    import bench

    defaults = ["--models", "qwen3-0.6b", "llama-3.2-1b", "qwen3-1.7b", "--budget-gib", "1.5",
                "--phase-s", "10", "--peak-rate", "4", "--low-rate", "0.3", "--quiet-s", "30",
                "--input-len", "512", "1024", "--output-len", "32", "64", "--cpu-offload-gib", "2"]
    return bench.main(["multimodel", *defaults, *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
