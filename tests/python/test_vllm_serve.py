"""`vllm serve` on kvpager memory, as a user runs it (GPU; skipped without one, without vLLM's
server packages, or without the kvpager binary: KVPAGER_BINARY).

One OpenAI-compatible server of a tiny Llama (dummy weights, token-id prompts) with
KVPAGER_VLLM=1 and kvpager's entry points installed as pip would:

* completions are served, the engine is in the registry under --served-model-name;
* /metrics shows kvpager's figures beside vLLM's own;
* `kvpager limit` acts live: under a limit far below what a burst wants, every request still
  completes (vLLM waits and preempts), and what the engine holds stays within the limit;
* stopping the server removes its registry entry.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import pytest
from conftest import require_vllm_on_gpu

require_vllm_on_gpu("uvicorn", "vllm.entrypoints.openai.api_server", what="vLLM's server")

import kvpager
from kvpager.integrations.vllm.__main__ import install_entry_point

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import vllm_engine_run  # its tiny model configs

OUT = os.environ.get("KVPAGER_VLLM_TEST_OUT") or tempfile.mkdtemp(prefix="kvpager-vllm-")
NAME = "tiny-serve"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def complete(base, prompt, max_tokens):
    body = json.dumps({"model": NAME, "prompt": prompt, "max_tokens": max_tokens,
                       "temperature": 0.0, "ignore_eos": True, "return_token_ids": True})
    req = urllib.request.Request(base + "/v1/completions", data=body.encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


def burst(base, count, length, max_tokens, seed):
    results, threads = [None] * count, []

    def one(i):
        try:
            results[i] = complete(base, vllm_engine_run.token_ids(length, seed + i), max_tokens)
        except Exception as e:  # noqa: BLE001 - reported by the caller
            results[i] = e

    for i in range(count):
        threads.append(threading.Thread(target=one, args=(i,)))
        threads[-1].start()
    for t in threads:
        t.join()
    return results


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + "{") and f'instance="{NAME}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def entry(prefix):
    snap = kvpager.registry_snapshot(prefix)
    return next((i for i in snap["instances"] if i["name"] == NAME), None)


@pytest.fixture
def kvpager_cli():
    binary = os.environ.get("KVPAGER_BINARY") or shutil.which("kvpager")
    if not binary:
        pytest.skip("the kvpager binary is needed (KVPAGER_BINARY or PATH)")
    return binary


def test_vllm_serve_on_kvpager_with_metrics_and_a_live_limit(kvpager_cli):
    prefix = f"kvs{os.getpid() % 100000}-"
    site = os.path.join(OUT, "site")
    install_entry_point(site)
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(kvpager.__file__)))
    env = dict(os.environ, KVPAGER_VLLM="1", KVPAGER_SHM_PREFIX=prefix, VLLM_NO_USAGE_STATS="1",
               HF_HUB_OFFLINE="1", VLLM_USE_FLASHINFER_SAMPLER="0", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(
        [site, pkg_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve",
           vllm_engine_run.model_dir("gqa"), "--served-model-name", NAME, "--port", str(port),
           "--load-format", "dummy", "--skip-tokenizer-init", "--enforce-eager",
           "--max-model-len", "4096", "--gpu-memory-utilization", "0.05",
           "--kv-cache-memory-bytes", str(1 << 30), "--attention-backend", "TRITON_ATTN"]
    log = open(os.path.join(OUT, "serve.log"), "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    report = {}
    try:
        deadline = time.time() + 300
        while True:
            assert server.poll() is None, "vllm serve exited at start (serve.log)"
            try:
                get(base + "/health", timeout=2)
                break
            except OSError:
                assert time.time() < deadline, "vllm serve did not come up in 300 s"
                time.sleep(1)

        first = burst(base, 16, 500, 16, seed=1)
        bad = [r for r in first if not isinstance(r, dict)]
        assert not bad, f"requests failed: {bad[:2]}"
        assert all(len(r["choices"][0]["token_ids"]) == 16 for r in first)
        e = entry(prefix)
        assert e is not None and e["alive"] and e["mapped_bytes"] > 0, "engine not in registry"
        text = get(base + "/metrics")
        report["metrics"] = [ln for ln in text.splitlines() if ln.startswith("kvpager:")]
        assert metric(text, "kvpager:mapped_bytes") == pytest.approx(
            entry(prefix)["mapped_bytes"], rel=0.5)
        assert metric(text, "kvpager:limit_bytes") == float("inf")
        assert metric(text, "kvpager:device_budget_bytes") > 0
        assert "vllm:kv_cache_usage_perc" in text  # vLLM's own metrics are still there

        limit = 24 << 20  # a 1000-token request needs ~8 MiB: a burst of 12 needs ~96 MiB
        cli = subprocess.run([kvpager_cli, "limit", NAME, str(limit)], env=env,
                             capture_output=True, text=True, check=False)
        assert cli.returncode == 0, cli.stderr
        deadline = time.time() + 3  # idle, the engine gives back what is above the limit
        while entry(prefix)["mapped_bytes"] > limit and time.time() < deadline:
            time.sleep(0.02)
        report["held_after_limit_idle"] = entry(prefix)["mapped_bytes"]
        assert report["held_after_limit_idle"] <= limit, "the idle engine kept memory above it"
        held = []
        sampling = threading.Event()

        def sample():
            while not sampling.is_set():
                e = entry(prefix)
                if e:
                    held.append(e["mapped_bytes"])
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        second = burst(base, 12, 1000, 32, seed=100)
        sampling.set()
        sampler.join()
        bad = [r for r in second if not isinstance(r, dict)]
        assert not bad, f"requests failed under the limit: {bad[:2]}"
        assert all(len(r["choices"][0]["token_ids"]) == 32 for r in second)
        report["held_under_limit_max"] = max(held)
        report["samples"] = len(held)
        assert max(held) <= limit, "the engine held more than its live limit"
        text = get(base + "/metrics")
        assert metric(text, "kvpager:limit_bytes") == limit
        report["metrics_after_limit"] = [ln for ln in text.splitlines()
                                         if ln.startswith("kvpager:")]
        listed = subprocess.run([kvpager_cli, "list"], env=env, capture_output=True, text=True,
                                check=False)
        report["kvpager_list"] = listed.stdout
        assert NAME in listed.stdout
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        with open(os.path.join(OUT, "serve.json"), "w") as f:
            json.dump(report, f, indent=1)
    # vLLM's API server SIGKILLs its engine core right after SIGTERM (shutdown timeout 0 s),
    # before the cache can leave the registry: its entry must then read dead, and `kvpager gc`
    # (or the next charge on the device) reclaims it, leaving nothing charged
    deadline = time.time() + 10
    while (e := entry(prefix)) is not None and e["alive"] and time.time() < deadline:
        time.sleep(0.2)
    assert e is None or not e["alive"], "the registry shows the stopped server alive"
    gc = subprocess.run([kvpager_cli, "gc"], env=env, capture_output=True, text=True, check=False)
    assert gc.returncode == 0, gc.stderr
    assert entry(prefix) is None, f"kvpager gc left the dead server's entry: {gc.stdout}"
    assert all(d["charged_bytes"] == 0 for d in kvpager.registry_snapshot(prefix)["devices"])
