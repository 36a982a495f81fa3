"""Open-loop load generator for OpenAI-compatible ``/v1/completions`` servers (``vllm serve``),
standard library only (asyncio streams): it runs on the GPU machine's python3 as it is.

Every request is one streamed completion of token-id prompt (``prompt`` a list of ints),
``max_tokens`` tokens with ``ignore_eos`` and ``temperature`` 0, ``stream_options.include_usage``
and ``return_token_ids`` (so each chunk says how many tokens it carries, tokenizer or not). A
request is sent at its trace arrival time whether or not earlier ones have finished (open loop);
several servers are driven from one event loop, so one trace can hit three models at once.

Per request (times in seconds from the run's start, ``time.perf_counter``): when it was due,
when it was sent (connection opened), when each chunk with tokens arrived and how many tokens it
held, the end, the usage chunk's token counts (and cached prompt tokens when the server reports
them). From those: TTFT (sent -> first token chunk), ITL (gaps between token chunks: vLLM streams
one chunk per engine step, one token per step without speculative decoding), TPOT (mean ITL),
end-to-end; per run through benchmarks/serving/driver.py's summarize: throughput and the
latency statistics.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass, field

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "serving"))

import driver  # benchmarks/serving: RequestResult, summarize


@dataclass(frozen=True)
class Endpoint:
    """One server: where it listens and the model name it serves."""

    host: str
    port: int
    model: str


@dataclass
class Record:
    """What happened to one request. Times are seconds from the run's start; chunks are
    (arrival time, tokens in the chunk) of every chunk that carried tokens."""

    request_id: str
    server: str
    due_s: float
    prompt_len: int
    max_tokens: int
    sent_s: float = float("nan")
    end_s: float = float("nan")
    chunks: list = field(default_factory=list)
    status: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    error: str | None = None

    @property
    def output_tokens(self) -> int:
        if self.completion_tokens is not None:
            return self.completion_tokens
        return sum(n for _, n in self.chunks)

    def result(self) -> driver.RequestResult:
        """As benchmarks/serving/driver.py's RequestResult (NaN latencies when it failed)."""
        error = self.error or (None if self.chunks else "no tokens")
        if error:
            return driver.RequestResult(self.request_id, self.sent_s, self.prompt_len,
                                        self.output_tokens, float("nan"), float("nan"), [], error)
        times = [t for t, _ in self.chunks]
        return driver.RequestResult(self.request_id, self.sent_s, self.prompt_len, self.output_tokens,
                                    times[0] - self.sent_s, self.end_s - self.sent_s,
                                    [b - a for a, b in zip(times, times[1:])])

    def to_json(self) -> dict:
        r = self.result()
        return dict(asdict(self), ttft_s=r.ttft_s, e2e_s=r.e2e_s, tpot_s=r.tpot_s,
                    itl_s=r.itl_s, output_tokens=self.output_tokens, late_s=self.sent_s - self.due_s)


def request_body(model: str, prompt: list, max_tokens: int) -> bytes:
    return json.dumps({
        "model": model, "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True,
        "temperature": 0.0, "stream": True, "stream_options": {"include_usage": True},
        "return_token_ids": True,
    }).encode()


async def _read_head(reader) -> tuple[int, dict]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed before a status line")
    status = int(status_line.split()[1])
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            return status, headers
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()


async def _body_pieces(reader, headers):
    """The response body as it arrives: de-chunked (Transfer-Encoding: chunked), else read to
    Content-Length or to the end of the connection."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                return
            piece = await reader.readexactly(size)
            await reader.readexactly(2)
            yield piece
    left = int(headers["content-length"]) if "content-length" in headers else None
    while left is None or left > 0:
        piece = await reader.read(65536 if left is None else min(left, 65536))
        if not piece:
            return
        if left is not None:
            left -= len(piece)
        yield piece


def _apply_event(rec: Record, payload: dict, now: float) -> None:
    if "error" in payload or payload.get("object") == "error":
        rec.error = json.dumps(payload.get("error", payload))[:300]
        return
    for choice in payload.get("choices") or []:
        ids = choice.get("token_ids")
        n = len(ids) if ids is not None else (1 if choice.get("text") else 0)
        if n:
            rec.chunks.append((now, n))
    usage = payload.get("usage")
    if usage:
        rec.prompt_tokens = usage.get("prompt_tokens")
        rec.completion_tokens = usage.get("completion_tokens")
        rec.cached_tokens = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")


async def stream_one(endpoint: Endpoint, rec: Record, prompt: list, t0: float) -> None:
    """Sends one request and fills ``rec`` from its event stream; errors end up in rec.error."""
    body = request_body(endpoint.model, prompt, rec.max_tokens)
    writer = None
    rec.sent_s = time.perf_counter() - t0
    try:
        reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port, limit=1 << 22)
        writer.write((f"POST /v1/completions HTTP/1.1\r\nHost: {endpoint.host}:{endpoint.port}\r\n"
                      f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
                      f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body)
        await writer.drain()
        rec.status, headers = await _read_head(reader)
        if rec.status != 200:
            text = b"".join([piece async for piece in _body_pieces(reader, headers)])
            rec.end_s = time.perf_counter() - t0
            rec.error = f"HTTP {rec.status}: {text[:300].decode(errors='replace')}"
            return
        buffer, done = b"", False
        async for piece in _body_pieces(reader, headers):
            now = time.perf_counter() - t0
            buffer += piece.replace(b"\r\n", b"\n")
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                for line in event.split(b"\n"):
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        done = True
                    else:
                        _apply_event(rec, json.loads(data), now)
        rec.end_s = time.perf_counter() - t0
        if not done and rec.error is None:
            rec.error = "stream ended without [DONE]"
    except (OSError, ValueError, asyncio.IncompleteReadError) as e:
        rec.end_s = time.perf_counter() - t0
        rec.error = f"{type(e).__name__}: {e}"
    finally:
        if writer is not None:
            writer.close()


def raise_open_files_limit() -> int:
    """Open loop at a saturating rate keeps many connections open: the soft limit goes to the
    hard one. Returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def _run(jobs, endpoints, t0, timeout_s, on_start):
    tasks, records = [], []
    if on_start is not None:
        on_start(t0)
    for server, spec in sorted(jobs, key=lambda j: j[1].arrival_s):
        delay = t0 + spec.arrival_s - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        rec = Record(spec.request_id, server, spec.arrival_s, len(spec.prompt), spec.max_new_tokens)
        records.append(rec)
        tasks.append(asyncio.ensure_future(stream_one(endpoints[server], rec, spec.prompt, t0)))
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for rec in records:
            if rec.error is None and rec.end_s != rec.end_s:
                rec.error = f"unfinished {timeout_s:.0f} s after the last arrival"
    return records


def run_open_loop(jobs, endpoints: dict, *, timeout_s: float = 600.0, lead_s: float = 0.05,
                  on_start=None) -> tuple[float, list]:
    """Sends ``jobs`` ([(server name, workload.RequestSpec)]) to ``endpoints`` ({server name:
    Endpoint}) at their arrival times, open loop. Returns (t0: the run's start on the
    time.perf_counter clock, [Record] in arrival order). Requests still running ``timeout_s``
    after the last arrival are cancelled and recorded as failed. ``on_start(t0)`` is called
    once, before the first send (samplers use it to share the run's clock)."""
    raise_open_files_limit()
    t0 = time.perf_counter() + lead_s
    return t0, asyncio.run(_run(jobs, endpoints, t0, timeout_s, on_start))


def summarize(records: list) -> dict:
    """driver.summarize of the records, plus how late sends were (scheduling lag)."""
    out = driver.summarize([r.result() for r in records])
    late = [r.sent_s - r.due_s for r in records if r.sent_s == r.sent_s]
    out["send_late_s"] = {"max": max(late), "mean": sum(late) / len(late)} if late else {}
    return out


def summarize_by_server(records: list) -> dict:
    by = {}
    for r in records:
        by.setdefault(r.server, []).append(r)
    return {server: summarize(rs) for server, rs in sorted(by.items())}
