"""`vllm serve` processes of the systems compared: stock vLLM, kvcached, kvpager (and kvpager
with guarantees, and kvpager with its calls timed), started, waited for and stopped cleanly.

A system is the same `vllm serve` command line with a different environment:

| system | environment |
|---|---|
| stock | neither KVPAGER_VLLM nor ENABLE_KVCACHED |
| kvcached | ENABLE_KVCACHED=true KVCACHED_AUTOPATCH=1, KVCACHED_IPC_NAME per server |
| kvcached-evict | kvcached + KVCACHED_MAX_CACHED_TOKENS=0 (freed blocks unmapped at once) |
| kvpager | KVPAGER_VLLM=1, KVPAGER_INSTANCE = the served name, KVPAGER_VLLM_SAMPLES per server |
| kvpager-guarantee | kvpager + KVPAGER_VLLM_GUARANTEE (the server's static share) |
| kvpager-keep | kvpager + KVPAGER_VLLM_PRESSURE_KEEP_S=10 (keeps a recent request's worth) |
| kvpager-timed | kvpager + accounting/ first on PYTHONPATH (time spent in kvpager's calls) |

Each server runs in its own session (process group): ``stop`` sends SIGTERM to the group, waits,
then SIGKILLs what is left of it and reaps the leader, so no engine process outlives a run; kvpager
servers are followed by ``kvpager gc`` (vLLM kills its engine core at once, so its registry entry
reads dead and gc reclaims it). Readiness: /health answers 200 and /v1/models lists the served
name, within a timeout; a server that exits or times out raises ServerError with its log's tail.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
# kvcached's own default (its page allocator maps only while more than (1 - this) of the
# device is free: 7 GiB on an H200), set explicitly so the ballast (ballast.py) can leave it.
KVCACHED_GPU_UTILIZATION = 0.95

SYSTEMS = ("stock", "kvcached", "kvcached-evict", "kvpager", "kvpager-guarantee", "kvpager-keep",
           "kvpager-timed")
# kvpager-keep's window: the trickle of the multimodel trace (0.5 req/s) asks every ~2 s
KEEP_WINDOW_S = 10
sys.path.insert(0, os.path.join(HERE, "..", "serving"))

import registry_probe  # benchmarks/serving: the kvpager command


class ServerError(RuntimeError):
    pass


def is_kvpager(system: str) -> bool:
    return system.startswith("kvpager")


def is_kvcached(system: str) -> bool:
    return system.startswith("kvcached")


@dataclass
class ServerSpec:
    """One `vllm serve`: ``kv_bytes`` is --kv-cache-memory-bytes (stock's KV size, kvpager's
    pooled share, kvcached's virtual capacity); ``extra`` more vllm serve arguments."""

    name: str
    model_dir: str
    port: int
    system: str
    kv_bytes: int
    max_model_len: int = 4096
    gpu_memory_utilization: float = 0.2
    enforce_eager: bool = False
    guarantee_bytes: int = 0
    extra: list = field(default_factory=list)
    command: list | None = None  # replaces the vllm serve command line (tests' fake servers)


def serve_command(spec: ServerSpec, python: str = sys.executable) -> list:
    if spec.command is not None:
        return list(spec.command)
    cmd = [python, "-m", "vllm.entrypoints.cli.main", "serve", spec.model_dir,
           "--served-model-name", spec.name, "--host", "127.0.0.1", "--port", str(spec.port),
           "--load-format", "dummy", "--skip-tokenizer-init", "--max-model-len", str(spec.max_model_len),
           "--gpu-memory-utilization", str(spec.gpu_memory_utilization),
           "--kv-cache-memory-bytes", str(spec.kv_bytes)]
    if spec.enforce_eager:
        cmd.append("--enforce-eager")
    return cmd + list(spec.extra)


def server_env(spec: ServerSpec, base: dict, work: str) -> dict:
    """The environment of ``spec``'s server under its system (see the module's table)."""
    env = {k: v for k, v in base.items()
           if not k.startswith(("KVPAGER_VLLM", "KVCACHED_")) and k != "ENABLE_KVCACHED"}
    env.update(VLLM_NO_USAGE_STATS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    if is_kvcached(spec.system):
        env.update(ENABLE_KVCACHED="true", KVCACHED_AUTOPATCH="1",
                   KVCACHED_IPC_NAME=kvcached_ipc_name(spec.name),
                   KVCACHED_GPU_UTILIZATION=str(KVCACHED_GPU_UTILIZATION))
        if spec.system == "kvcached-evict":
            # kvcached keeps up to 16000 tokens of freed blocks mapped for prefix reuse by
            # default (1.7 GiB for Qwen3-0.6B), which no other process can reclaim; 0 unmaps
            # them at once, the setting for engines that share a device.
            env["KVCACHED_MAX_CACHED_TOKENS"] = "0"
    elif is_kvpager(spec.system):
        env.update(KVPAGER_VLLM="1", KVPAGER_INSTANCE=spec.name,
                   KVPAGER_VLLM_SAMPLES=os.path.join(work, f"{spec.name}.samples.jsonl") + ":0.1")
        if spec.system == "kvpager-guarantee":
            env["KVPAGER_VLLM_GUARANTEE"] = str(spec.guarantee_bytes or spec.kv_bytes)
        if spec.system == "kvpager-keep":
            env["KVPAGER_VLLM_PRESSURE_KEEP_S"] = str(KEEP_WINDOW_S)
        if spec.system == "kvpager-timed":
            env["KVPAGER_BENCH_CALLS_DIR"] = calls_dir(work, spec.name)
            path = [os.path.join(HERE, "accounting")] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
            env["PYTHONPATH"] = os.pathsep.join(path)
    elif spec.system != "stock":
        raise ValueError(f"unknown system {spec.system!r} (choose from {', '.join(SYSTEMS)})")
    return env


def kvcached_ipc_name(server: str) -> str:
    return "kvbench_" + "".join(c if c.isalnum() or c in "_-" else "_" for c in server)


def calls_dir(work: str, server: str) -> str:
    return os.path.join(work, f"{server}.calls")


def _get(url: str, timeout: float) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


def log_tail(path: str, lines: int = 40) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return f"(no log: {e})"


class Server:
    """One started server. ``start`` returns at once; ``wait_ready`` blocks; ``stop`` is
    idempotent and never raises."""

    def __init__(self, spec: ServerSpec, env: dict, log_path: str):
        self.spec, self.env, self.log_path = spec, env, log_path
        self.proc: subprocess.Popen | None = None
        self.started_at = self.ready_after_s = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.spec.port}"

    def start(self) -> Server:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(serve_command(self.spec), env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        self.started_at = time.time()
        return self

    def wait_ready(self, timeout_s: float = 600.0) -> float:
        """Seconds until /health and /v1/models answered; ServerError (with the log's tail) if
        the server exited or did not come up in ``timeout_s``."""
        deadline = self.started_at + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise ServerError(f"{self.spec.name} ({self.spec.system}) exited with "
                                  f"{self.proc.returncode} at start; log tail:\n{log_tail(self.log_path)}")
            try:
                if _get(self.base_url + "/health", 2)[0] == 200:
                    models = json.loads(_get(self.base_url + "/v1/models", 5)[1])
                    if any(m.get("id") == self.spec.name for m in models.get("data", [])):
                        self.ready_after_s = time.time() - self.started_at
                        return self.ready_after_s
            except (OSError, ValueError):
                pass
            if time.time() > deadline:
                raise ServerError(f"{self.spec.name} ({self.spec.system}) not ready in {timeout_s:.0f} s; "
                                  f"log tail:\n{log_tail(self.log_path)}")
            time.sleep(0.5)

    def pids(self) -> set:
        """The leader and every live process of its session (engine core, workers)."""
        if self.proc is None:
            return set()
        out = {self.proc.pid}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.getsid(int(entry)) == self.proc.pid:
                        out.add(int(entry))
                except OSError:
                    continue
        return out

    def _signal_group(self, sig) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def _wait_group(self, seconds: float) -> bool:
        """True once the leader has exited (reaped) and no process of its session is left."""
        deadline = time.time() + seconds
        while True:
            if self.proc.poll() is not None and self.pids() == {self.proc.pid}:
                return True
            if time.time() > deadline:
                return False
            time.sleep(0.1)

    def stop(self, grace_s: float = 30.0) -> int | None:
        """SIGTERM to the process group, SIGKILL after ``grace_s`` to whatever of it is left;
        the leader is reaped. Returns the leader's exit status."""
        if self.proc is None:
            return None
        self._signal_group(signal.SIGTERM)
        if not self._wait_group(grace_s):
            self._signal_group(signal.SIGKILL)
            self._wait_group(10.0)
        self._signal_group(signal.SIGKILL)  # a straggler that left after the leader exited
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return None


def kvpager_gc(env: dict) -> str:
    """`kvpager gc`: removes dead instances' segments and their device charge."""
    out = subprocess.run([registry_probe.kvpager_binary(), "gc"], capture_output=True, text=True,
                         env=env, check=False)
    return (out.stdout + out.stderr).strip()


class ServerGroup:
    """The servers of one system, started at once, waited for, and all stopped on exit, however
    it is left. Starting at once is safe because every server is given --kv-cache-memory-bytes:
    vLLM (0.24.0 and 0.26.0, ``Worker.determine_available_memory``) then skips the memory
    profiling whose before/after check of the device's free memory would see the others'
    allocations. Servers of one model must not start at once (their torch.compile cache entry is
    the same file): run.py's ``start_together`` starts the first group alone for that."""

    def __init__(self, specs: list, base_env: dict, work: str, ready_timeout_s: float = 600.0,
                 stop_grace_s: float = 30.0, sequential: bool = False):
        """``sequential``: start the servers one after another, each once the one before is
        ready (run.py's --one-by-one for kvpager's). kvpager engines warming up at once under a
        tight pooled budget share it: a warm-up backs what the budget affords and, with no
        room for one block, waits for the others' warm-ups to free theirs
        (``worker.back_warmup_window``)."""
        self.specs, self.base_env, self.work = specs, base_env, work
        self.ready_timeout_s, self.stop_grace_s = ready_timeout_s, stop_grace_s
        self.sequential = sequential
        self.servers: list = []
        self.gc_output = None

    def start(self) -> ServerGroup:
        """Starts every server and returns at once (a ``sequential`` group: once each is ready);
        on an error the started ones are stopped."""
        try:
            for spec in self.specs:
                env = server_env(spec, self.base_env, self.work)
                if spec.system == "kvpager-timed":
                    os.makedirs(env["KVPAGER_BENCH_CALLS_DIR"], exist_ok=True)
                server = Server(spec, env, os.path.join(self.work, f"{spec.system}-{spec.name}.log"))
                self.servers.append(server.start())
                if self.sequential:
                    server.wait_ready(self.ready_timeout_s)
        except BaseException:
            self.__exit__()
            raise
        return self

    def wait_ready(self) -> ServerGroup:
        """Blocks until every server is ready; ServerError (the first failure's) after stopping
        them all."""
        try:
            for server in self.servers:
                server.wait_ready(self.ready_timeout_s)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __enter__(self):
        return self.start().wait_ready()

    def __exit__(self, *exc) -> bool:
        for server in reversed(self.servers):
            server.stop(self.stop_grace_s)
        if any(is_kvpager(s.system) for s in self.specs):
            self.gc_output = kvpager_gc(self.base_env)
        return False
