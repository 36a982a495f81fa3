"""benchmarks/vllm_serving: traces identical across systems, the mirrored (ABBA) order, the
servers' command lines and environments per system, process cleanup of a server that ignores
SIGTERM, and the timer of kvpager's calls. Pure Python with fake server commands (CI); no
result ever comes from them."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

SOURCE_DIR = os.environ.get("KVPAGER_SOURCE_DIR",
                            os.path.join(os.path.dirname(__file__), "..", ".."))
BENCH = os.path.realpath(os.path.join(SOURCE_DIR, "benchmarks", "vllm_serving"))
sys.path.insert(0, BENCH)

import model_dirs  # noqa: E402 - after the sys.path insert above
import order  # noqa: E402 - after the sys.path insert above
import servers  # noqa: E402 - after the sys.path insert above
import traces  # noqa: E402 - after the sys.path insert above


def _staggered(seed):
    return traces.staggered_jobs(["a", "b", "c"], [1000, 2000, 3000], phase_s=5, peak_rate=6,
                                 low_rate=0.5, quiet_s=5, input_len=(16, 64), output_len=(4, 8),
                                 seed=seed, shared_prefix=(2, 8))


def test_the_same_seed_gives_every_system_the_same_trace_and_another_seed_another():
    a, b = _staggered(traces.trace_seed(0, 1)), _staggered(traces.trace_seed(0, 1))
    assert traces.fingerprint(a) == traces.fingerprint(b)
    assert [(s, r.to_json()) for s, r in a] == [(s, r.to_json()) for s, r in b]
    assert traces.fingerprint(_staggered(traces.trace_seed(0, 2))) != traces.fingerprint(a)
    p1 = traces.poisson_jobs("llm", 4, 10, (8, 16), (2, 4), 500, 7)
    def poisson(seed):
        return traces.poisson_jobs("llm", 4, 10, (8, 16), (2, 4), 500, seed)

    assert traces.fingerprint(p1) == traces.fingerprint(poisson(7))
    assert traces.fingerprint(p1) != traces.fingerprint(poisson(8))


def test_staggered_bursts_peak_in_their_own_phase_and_share_prefixes():
    jobs = _staggered(3)
    assert [j[1].arrival_s for j in jobs] == sorted(j[1].arrival_s for j in jobs)
    for i, server in enumerate("abc"):
        own = [r for s, r in jobs if s == server and i * 5 <= r.arrival_s < (i + 1) * 5]
        other = [r for s, r in jobs if s == server and not i * 5 <= r.arrival_s < (i + 1) * 5]
        assert len(own) > len(other) / 2, f"{server} does not peak in its phase"
        prefixes = {tuple(r.prompt[:8]) for s, r in jobs if s == server}
        assert len(prefixes) <= 2


def test_mirrored_order_is_abba_and_slots_slice_it():
    assert order.mirrored(["stock", "kvpager"], 0) == ["stock", "kvpager", "kvpager", "stock"]
    assert order.mirrored(["stock", "kvpager"], 1) == ["kvpager", "stock", "stock", "kvpager"]
    assert order.mirrored(["s", "c", "k"], 0) == ["s", "c", "k", "k", "c", "s"]
    assert order.mirrored(["s", "c", "k"], 3) == ["k", "c", "s", "s", "c", "k"]
    assert list(order.parse_slots(None, 4)) == [0, 1, 2, 3]
    assert list(order.parse_slots("1:3", 4)) == [1, 2]
    assert list(order.parse_slots("2", 4)) == [2]
    assert list(order.parse_slots("2:", 4)) == [2, 3]
    with pytest.raises(ValueError):
        order.parse_slots("3:5", 4)


def test_serve_command_and_environment_per_system(tmp_path):
    d = model_dirs.model_dir("qwen3-0.6b", str(tmp_path))
    with open(os.path.join(d, "config.json")) as f:
        config = json.load(f)
    assert config["architectures"] == ["Qwen3ForCausalLM"]
    assert not any(k.startswith("_") for k in config)
    spec = servers.ServerSpec("m0", d, 18000, "stock", 1 << 30, enforce_eager=True)
    cmd = servers.serve_command(spec, "python3")
    for flag in ("--load-format", "dummy", "--skip-tokenizer-init", "--enforce-eager",
                 "--served-model-name", "--kv-cache-memory-bytes", str(1 << 30)):
        assert flag in cmd
    base = {"PATH": "/bin", "KVPAGER_VLLM": "1", "ENABLE_KVCACHED": "true", "PYTHONPATH": "/site"}
    stock = servers.server_env(spec, base, str(tmp_path))
    assert "KVPAGER_VLLM" not in stock and "ENABLE_KVCACHED" not in stock
    spec.system = "kvcached"
    kvc = servers.server_env(spec, base, str(tmp_path))
    assert kvc["ENABLE_KVCACHED"] == "true" and kvc["KVCACHED_AUTOPATCH"] == "1"
    assert kvc["KVCACHED_GPU_UTILIZATION"] == "0.95"  # its default, which the ballast leaves free
    assert "KVPAGER_VLLM" not in kvc and "KVCACHED_MAX_CACHED_TOKENS" not in kvc
    spec.system = "kvcached-evict"
    evict = servers.server_env(spec, base, str(tmp_path))
    assert evict == {**kvc, "KVCACHED_MAX_CACHED_TOKENS": "0"}
    spec.system, spec.guarantee_bytes = "kvpager-guarantee", 123
    kvg = servers.server_env(spec, base, str(tmp_path))
    assert kvg["KVPAGER_VLLM"] == "1" and kvg["KVPAGER_INSTANCE"] == "m0"
    assert kvg["KVPAGER_VLLM_GUARANTEE"] == "123"
    assert "KVPAGER_VLLM_PRESSURE_KEEP_S" not in kvg
    spec.system = "kvpager-keep"
    keep = servers.server_env(spec, base, str(tmp_path))
    assert keep["KVPAGER_VLLM"] == "1" and keep["KVPAGER_VLLM_PRESSURE_KEEP_S"] == "10"
    spec.system = "kvpager-timed"
    timed = servers.server_env(spec, base, str(tmp_path))
    assert timed["PYTHONPATH"].split(os.pathsep) == [os.path.join(BENCH, "accounting"), "/site"]
    spec.system = "bogus"
    with pytest.raises(ValueError):
        servers.server_env(spec, base, str(tmp_path))


def test_kvcacheds_ballast_leaves_the_budget_free_above_kvcacheds_own_headroom():
    import ballast
    gib = 1 << 30
    total = 140 * gib
    free = ballast.kvcached_free_target(total=total, budget=3 * gib, kv_now=gib, utilization=0.95)
    # kvcached maps while free memory exceeds 5 % of the device: what it can still map is what
    # the budget has left beyond the gigabyte its engines mapped already
    assert free - int(total * 0.05) == 2 * gib
    assert ballast.kvcached_free_target(total=total, budget=3 * gib, kv_now=gib, utilization=0.95,
                                        margin=gib) == free + gib
    # never below the headroom
    assert ballast.kvcached_free_target(total=total, budget=gib, kv_now=2 * gib,
                                        utilization=0.95) == int(total * 0.05)


# torch for the ballast's program: a device of 10 GiB whose CUDA context takes 512 MiB when the
# first tensor is made, as a real context does
_FAKE_TORCH = """
uint8 = 'uint8'
class cuda:
    free = 10 << 30
    @staticmethod
    def mem_get_info():
        return cuda.free, 10 << 30
_context = []
def empty(n, dtype=None, device=None):
    if not _context:
        _context.append(1)
        cuda.free -= 512 << 20
    cuda.free -= n
    return object()
"""


def test_the_ballast_leaves_its_target_free_after_its_own_context(tmp_path, monkeypatch):
    import ballast
    (tmp_path / "torch.py").write_text(_FAKE_TORCH)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    held = ballast.hold(3 << 30, str(tmp_path / "ballast.log"), timeout_s=30)
    try:
        # the context's 512 MiB is not taken out of what is left free, but out of what is held
        assert held.free_after == 3 << 30
        assert held.held == (10 << 30) - (512 << 20) - 1 - (3 << 30)  # - 1: its first tensor
    finally:
        held.stop()
    assert ballast.parse_ready("loading\nready 5 7\n") == (5, 7)
    assert ballast.parse_ready("ready") is None


# A fake `vllm serve`: /health and /v1/models, a child in its process group, both ignore SIGTERM.
STUBBORN = textwrap.dedent("""
    import json, os, signal, subprocess, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
    open(sys.argv[2], "w").write(str(child.pid))
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a): pass
        def do_GET(self):
            models = self.path == "/v1/models"
            body = json.dumps({"data": [{"id": "fake"}]}).encode() if models else b"ok"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
    HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
""")


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read(path):
    with open(path) as f:
        return f.read()


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_server_that_ignores_sigterm_is_killed_with_its_children_and_reaped(tmp_path):
    port, child_file = _free_port(), str(tmp_path / "child.pid")
    spec = servers.ServerSpec("fake", "", port, "stock", 0,
                              command=[sys.executable, "-c", STUBBORN, str(port), child_file])
    server = servers.Server(spec, dict(os.environ), str(tmp_path / "fake.log")).start()
    try:
        assert server.wait_ready(30) > 0
        child = int(_read(child_file))
        assert child in server.pids() and server.proc.pid in server.pids()
        t = time.time()
        status = server.stop(grace_s=1.0)
        assert time.time() - t < 15
    finally:
        server.stop(grace_s=0.1)
    assert status == -9, "the leader ignored SIGTERM: it must have been SIGKILLed and reaped"
    assert not _alive(server.proc.pid) and not _alive(child), \
        "a process of the server outlived stop()"


def test_readiness_fails_with_the_log_tail_when_a_server_exits_or_never_answers(tmp_path):
    dead = servers.ServerSpec("dead", "", _free_port(), "stock", 0,
                              command=[sys.executable, "-c",
                                       "print('no GPU here'); raise SystemExit(3)"])
    server = servers.Server(dead, dict(os.environ), str(tmp_path / "dead.log")).start()
    with pytest.raises(servers.ServerError, match=r"exited with 3(.|\n)*no GPU here"):
        server.wait_ready(30)
    silent = servers.ServerSpec("silent", "", _free_port(), "stock", 0,
                                command=[sys.executable, "-c",
                                         "import time; print('loading'); time.sleep(60)"])
    server = servers.Server(silent, dict(os.environ), str(tmp_path / "silent.log")).start()
    try:
        with pytest.raises(servers.ServerError, match=r"not ready in 2 s(.|\n)*loading"):
            server.wait_ready(2)
    finally:
        server.stop(grace_s=1)
    assert server.proc.returncode is not None


def test_a_server_group_stops_what_it_started_when_a_later_server_fails(tmp_path):
    port = _free_port()
    good = servers.ServerSpec("fake", "", port, "stock", 0,
                              command=[sys.executable, "-c", STUBBORN, str(port),
                                       str(tmp_path / "c.pid")])
    bad = servers.ServerSpec("bad", "", _free_port(), "stock", 0,
                             command=[sys.executable, "-c", "raise SystemExit(1)"])
    group = servers.ServerGroup([good, bad], dict(os.environ), str(tmp_path), ready_timeout_s=30,
                                stop_grace_s=1)
    with pytest.raises(servers.ServerError), group:
        pass
    first = group.servers[0]
    assert first.proc.returncode is not None and not _alive(first.proc.pid)
    assert not _alive(int(_read(tmp_path / "c.pid")))


def test_the_call_timer_counts_kvpager_calls_in_a_process(tmp_path):
    pytest.importorskip("kvpager")
    script = ("import kvpager, time\n"
              "c = kvpager.KvCache(4, 2, 64, 'float16', 4, 256, device='cpu', reserve_pages=0)\n"
              "for _ in range(50):\n    c.free(c.alloc(2))\n"
              "from types import SimpleNamespace\n"
              "from kvpager.integrations.vllm import block_pool\n"
              "cls = block_pool.block_pool_class(object, None)\n"
              "pool = SimpleNamespace(free_block_queue=SimpleNamespace(num_free_blocks=9), kv=c,\n"
              "                       held_free_blocks=lambda: 0, _checked_after_stage=False)\n"
              "assert cls.get_num_free_blocks(pool) == 9\n"
              "c.stats(); time.sleep(1.5)\n")
    env = dict(os.environ, KVPAGER_BENCH_CALLS_DIR=str(tmp_path), KVPAGER_HOST_GRANULARITY="64K")
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(BENCH, "accounting"),
                                         env.get("PYTHONPATH", "")])
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
    files = [f for f in os.listdir(tmp_path) if f.endswith(".json")]
    assert len(files) == 1
    data = json.loads(_read(tmp_path / files[0]))
    assert data["methods"]["alloc"]["calls"] == 50 and data["methods"]["free"]["calls"] == 50
    assert 0 < data["methods"]["alloc"]["seconds"] < 1
    # the block pool's methods are timed too; the KvCache call inside one is tallied as nested
    assert data["methods"]["pool.get_num_free_blocks"]["calls"] == 1
    assert data["methods"]["nested:available"]["calls"] == 1 and "available" not in data["methods"]
    assert data["stats"]["alloc_calls"] == 50


def test_run_py_end_to_end_on_fake_servers_then_analyze(tmp_path, monkeypatch):
    """run.py's flow (servers per slot, warm-up, open-loop run, samples, /metrics, JSON lines)
    with the test's fake server in place of `vllm serve`, then analyze.py over its output."""
    import analyze
    import run

    fake = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vllm_bench_fake_server.py")
    monkeypatch.setattr(servers, "serve_command",
                        lambda spec, python=sys.executable: [python, fake, str(spec.port),
                                                             spec.name])
    out = tmp_path / "out"
    common = ["--out", str(out), "--work", str(tmp_path / "work"), "--port-base", str(_free_port()),
              "--input-len", "8", "16", "--output-len", "2", "4", "--sample-interval", "0.2"]
    starts = []
    real_start = servers.Server.start
    monkeypatch.setattr(servers.Server, "start",
                        lambda self: starts.append(self.spec.name) or real_start(self))
    staggered = ["--phase-s", "1", "--peak-rate", "10", "--low-rate", "1", "--quiet-s", "0.5",
                 "--idle-s", "0.3", "--no-kvcached-ballast",
                 "--models", "qwen3-0.6b", "llama-3.2-1b", "--systems", "stock", "kvcached"]
    assert run.main(["multimodel", *common, *staggered]) == 0
    assert len(starts) == 4 * 2, "without --together each slot starts its two servers"
    starts.clear()
    assert run.main(["multimodel", *common, *staggered, "--rep", "1", "--slots", "0:2",
                     "--together", "--then", "prefix:0:1", "--then", "multimodel:2:3"]) == 0
    assert sorted(starts) == sorted(["m0-qwen3-0.6b", "m1-llama-3.2-1b"] * 2), \
        "--together starts each system's servers once for every pass"
    with pytest.raises(SystemExit, match="--then needs --together"):
        run.main(["multimodel", *common, "--then", "prefix:0"])
    with pytest.raises(ValueError, match="expected multimodel"):
        run.parse_pass("overhead:1")
    assert run.main(["overhead", *common, "--systems", "stock", "kvcached", "--rates", "5", "10",
                     "--duration", "1", "--together"]) == 0
    runs = analyze.load([str(out / "multimodel.jsonl"), str(out / "overhead.jsonl")])
    mm = [r for r in runs if r["bench"] == "multimodel"]
    assert [(r["rep"], r["slot"], r["system"]) for r in mm] == [
        (0, 0, "stock"), (0, 1, "kvcached"), (0, 2, "kvcached"), (0, 3, "stock"),
        (1, 0, "kvcached"), (1, 1, "stock"), (2, 3, "stock")]
    assert len({r["trace"] for r in mm if r["rep"] == 0}) == 1
    assert len({r["trace"] for r in mm}) == 3, "each repetition has its own trace"
    pre = analyze.load([str(out / "prefix.jsonl")])
    assert [(r["rep"], r["slot"], r["system"]) for r in pre] == [(0, 1, "kvcached")]
    assert pre[0]["config"]["prefix_groups"] == 4 and mm[0]["config"]["prefix_groups"] == 0
    assert pre[0]["trace"] != mm[0]["trace"]
    assert all(r["summary"][s]["failed"] == 0 for r in mm + pre for s in r["servers"])
    assert all(r["meta"]["command"] for r in runs)
    over = [r for r in runs if r["bench"] == "overhead"]
    assert [(r["rate"], r["system"]) for r in over] == [
        (5, "stock"), (5, "kvcached"), (5, "kvcached"), (5, "stock"),
        (10, "stock"), (10, "kvcached"), (10, "kvcached"), (10, "stock")]
    summary, _ = analyze.summarize(runs)
    assert summary["trace_mismatches"] == []
    assert summary["multimodel"]["ratios"] == []  # ratios are against kvpager, which did not run
    assert {r["system"] for r in summary["multimodel"]["p99_peak_ttft"]} == {"stock", "kvcached"}
    hits = {r["system"]: r["hit_rate"] for r in analyze.prefix(mm)}
    assert hits["stock"] == pytest.approx(0.3)  # the fake's counters: 30 hits per 100 queries


@pytest.mark.parametrize("system", ["kvcached", "kvcached-evict"])
def test_a_kvcached_slot_runs_beside_a_ballast_that_leaves_its_room_free(tmp_path, monkeypatch,
                                                                         system):
    """run.py's kvcached slot with its ballast (the fake torch of the ballast test, a 10 GiB
    device): the record says what the ballast was asked to leave free and what it left."""
    import analyze
    import ballast
    import run

    (tmp_path / "torch.py").write_text(_FAKE_TORCH)
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", path)
    monkeypatch.setattr(ballast, "gpu_total_bytes", lambda: 10 << 30)
    fake = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vllm_bench_fake_server.py")

    def serve_command(spec, python=sys.executable):  # the fake for the servers, not the ballast
        return spec.command or [python, fake, str(spec.port), spec.name]

    monkeypatch.setattr(servers, "serve_command", serve_command)
    out = tmp_path / "out"
    assert run.main(["multimodel", "--out", str(out), "--work", str(tmp_path / "work"),
                     "--port-base", str(_free_port()), "--input-len", "8", "16",
                     "--output-len", "2", "4", "--sample-interval", "0.2", "--phase-s", "0.5",
                     "--peak-rate", "4", "--low-rate", "1", "--quiet-s", "0.2", "--idle-s", "0.2",
                     "--budget-gib", "1", "--slots", "0", "--models", "qwen3-0.6b",
                     "--systems", system]) == 0
    (record,) = analyze.load([str(out / "multimodel.jsonl")])
    assert record["system"] == system
    # no kvcached segment (fake servers): the whole budget is still to map, above the headroom
    want = (1 << 30) + int((10 << 30) * (1 - servers.KVCACHED_GPU_UTILIZATION))
    assert record["ballast_leaves_free"] == want and record["free_after_ballast"] == want
    assert record["ballast_bytes"] == (10 << 30) - (512 << 20) - 1 - want


@pytest.mark.parametrize("sequential", [True, False])
def test_a_sequential_group_starts_a_server_once_the_one_before_is_ready(tmp_path, sequential):
    """--one-by-one: a server that fails at start stops the group before the next is started;
    at once (the default) every server is started before any is waited for."""
    port = _free_port()
    bad = servers.ServerSpec("bad", "", _free_port(), "stock", 0,
                             command=[sys.executable, "-c", "raise SystemExit(1)"])
    good = servers.ServerSpec("fake", "", port, "stock", 0,
                              command=[sys.executable, "-c", STUBBORN, str(port),
                                       str(tmp_path / "c.pid")])
    group = servers.ServerGroup([bad, good], dict(os.environ), str(tmp_path), ready_timeout_s=30,
                                stop_grace_s=1, sequential=sequential)
    with pytest.raises(servers.ServerError, match="bad"), group:
        pass
    assert [s.spec.name for s in group.servers] == (["bad"] if sequential else ["bad", "fake"])
