"""`kvpager kvbench plan|kvcache|iosize` on every model x config file NIXL KVBench ships
(models/examples/nixl/: 7 models x 20 configs), against tests/model/nixl_kvbench_oracle.py:
upstream's arithmetic, with the differences models/README.md lists.

Run by CTest (KVPAGER_BINARY, KVPAGER_SOURCE_DIR); standalone: python3 <this file> after a
build (defaults: build/kvpager and the source tree). Exits 1 listing every mismatch.
"""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "model"))
import nixl_kvbench_oracle as oracle  # noqa: E402

SOURCE = os.environ.get("KVPAGER_SOURCE_DIR", os.path.join(HERE, "..", ".."))
BINARY = os.environ.get("KVPAGER_BINARY", os.path.join(SOURCE, "build", "kvpager"))
NIXL = os.path.join(SOURCE, "models", "examples", "nixl")
# nixlbench's defaults: a text plan leaves out a flag that equals its default (so does KVBench).
DEFAULTS = {"max_batch_size": 1, "max_block_size": 64 << 20, "start_batch_size": 1,
            "start_block_size": 4096, "total_buffer_size": 8 << 30}

failures = []


def check(ok, what):
    if not ok:
        failures.append(what)


def kvpager(*args):
    r = subprocess.run([BINARY, *args], capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr


def kvbench_size(n):
    """kvbench's size format: largest 1024 power, two decimals, trailing zeros dropped to one."""
    units, p, v = ["B", "KB", "MB", "GB", "TB"], 0, float(n)
    while p < 4 and v >= 1024:
        v, p = v / 1024, p + 1
    s = f"{v:.2f}"
    if s.endswith("0"):
        s = s[:-1]
    return f"{s} {units[p]}"


def expected_plan_text(config_path, c, want):
    """The seed README's text plan for `--backend GDS --source gpu`, sized buffer included."""
    flags = [("backend", "GDS"), ("max_batch_size", want["batch"]),
             ("max_block_size", want["block"]), ("start_batch_size", want["batch"]),
             ("start_block_size", want["block"]), ("target_seg_type", "VRAM"),
             ("total_buffer_size", want["total_buffer"])]
    flags = [(k, v) for k, v in flags if DEFAULTS.get(k) != v]
    sep = "=" * 80
    head = [sep, f"Model Config: {config_path}", f"ISL: {c['isl']} tokens",
            f"Page Size: {c['page_size']}", f"Requests: {c['num_requests']}",
            f"TP: {c['tp_size']}", f"PP: {c['pp_size']}", sep]
    return "\n".join(head) + "\n" + " \\\n    ".join(
        ["nixlbench"] + [f"--{k} {v}" for k, v in flags]) + "\n"


def check_pair(model_file, config_file):
    m, c = oracle.MODELS[model_file], oracle.CONFIGS[config_file]
    want = oracle.kvpager(m, c)
    model, config = os.path.join(NIXL, model_file), os.path.join(NIXL, config_file)
    pair = f"{model_file} x {config_file}"

    rc, out, err = kvpager("kvbench", "plan", "--model", model, "--model_config", config,
                           "--backend", "GDS", "--source", "gpu")
    check(rc == 0, f"{pair}: plan exit {rc}: {err.strip()}")
    check(out == expected_plan_text(config, c, want),
          f"{pair}: plan text\n--- got\n{out}--- want\n{expected_plan_text(config, c, want)}")

    rc, out, err = kvpager("kvbench", "plan", "--model", model, "--model_config", config,
                           "--backend", "POSIX", "--format", "json")
    check(rc == 0, f"{pair}: plan --format json exit {rc}: {err.strip()}")
    if rc == 0:
        [plan] = json.loads(out)
        for flag, key in (("max_block_size", "block"), ("start_block_size", "block"),
                          ("max_batch_size", "batch"), ("start_batch_size", "batch"),
                          ("total_buffer_size", "total_buffer")):
            check(plan[flag] == want[key], f"{pair}: json {flag} {plan[flag]} != {want[key]}")
        check(plan["op_type"] == "READ" and plan["target_seg_type"] == "DRAM",
              f"{pair}: POSIX from a file reads into DRAM: {plan}")

    rc, out, err = kvpager("kvbench", "kvcache", "--model", model, "--model_config", config)
    check(rc == 0, f"{pair}: kvcache exit {rc}: {err.strip()}")
    want_kvcache = (f"{'Model':<23}: {m['model_name']}\n"
                    f"{'Input Sequence Length':<23}: {c['isl']}\n"
                    f"{'Batch Size':<23}: {want['batch']}\n"
                    f"{'IO Size':<23}: {kvbench_size(want['block'])}\n")
    check(out == want_kvcache, f"{pair}: kvcache\n--- got\n{out}--- want\n{want_kvcache}")

    rc, out, err = kvpager("kvbench", "iosize", "--model", model, "--model_config", config)
    check(rc == 0, f"{pair}: iosize exit {rc}: {err.strip()}")
    check(out == f"IO Size per GPU: {want['io_per_token']}\n", f"{pair}: iosize {out!r}")


def check_glob(model_file):
    """A NIXL user's run: one model over all 20 configs by glob, every plan printed."""
    rc, out, err = kvpager("kvbench", "plan", "--model", os.path.join(NIXL, model_file),
                           "--model_configs", os.path.join(NIXL, "*-tp*-pp*.yaml"),
                           "--backend", "GDS", "--source", "gpu", "--format", "json")
    check(rc == 0, f"{model_file}: plan over the glob exit {rc}: {err.strip()}")
    if rc == 0:
        plans = json.loads(out)
        check(sorted(os.path.basename(p["config_file"]) for p in plans)
              == sorted(oracle.CONFIGS), f"{model_file}: glob plans {len(plans)}")


def main():
    oracle.check_oracle()
    assert sorted(f for f in os.listdir(NIXL) if f.endswith(".yaml")) == sorted(
        list(oracle.MODELS) + list(oracle.CONFIGS)), "models/examples/nixl/ holds other files"
    same = different = 0
    for model_file in sorted(oracle.MODELS):
        for config_file in sorted(oracle.CONFIGS):
            check_pair(model_file, config_file)
            m, c = oracle.MODELS[model_file], oracle.CONFIGS[config_file]
            if oracle.differences(m, c):
                different += 1
            else:
                same += 1
        check_glob(model_file)
    if failures:
        print(f"{len(failures)} mismatches:", *failures, sep="\n")
        return 1
    print(f"{same + different} model x config pairs (plan text, plan json, kvcache, iosize): "
          f"{same} as NIXL KVBench computes them, {different} with a difference that "
          "models/README.md lists")
    return 0


if __name__ == "__main__":
    sys.exit(main())
