"""benchmarks/vllm_serving/loadgen.py against a local server that speaks vLLM's streaming
completion format (SSE `data: {...}` chunks with choices[0].token_ids, a final usage chunk,
`data: [DONE]`, chunked transfer encoding) with injected delays. A test fixture only: no result
ever comes from it. Pure Python (CI)."""

import os
import sys

import pytest

SOURCE_DIR = os.environ.get("KVPAGER_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(SOURCE_DIR, "benchmarks", "vllm_serving"))
sys.path.insert(0, os.path.join(SOURCE_DIR, "benchmarks", "serving"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import loadgen
import workload
from vllm_bench_fake_server import FakeVllm


def _jobs(server, arrivals, prompt_lens, max_tokens):
    return [(server, workload.RequestSpec(f"{server}-{i}", t, list(range(10, 10 + n)), max_tokens))
            for i, (t, n) in enumerate(zip(arrivals, prompt_lens))]


def test_measured_ttft_itl_and_e2e_match_the_injected_delays_and_the_body_is_vllms():
    with FakeVllm(first_s=0.2, itl_s=0.05) as srv:
        _, records = loadgen.run_open_loop(_jobs("a", [0.0, 0.1], [32, 40], 8), {"a": srv.endpoint("m-a")})
        bodies = [b for _, b in srv.received]
    for rec in records:
        r = rec.to_json()
        assert r["error"] is None
        assert r["ttft_s"] == pytest.approx(0.2, abs=0.06)
        assert len(r["itl_s"]) == 7
        assert sum(r["itl_s"]) / 7 == pytest.approx(0.05, abs=0.015)
        assert r["e2e_s"] == pytest.approx(0.2 + 7 * 0.05, abs=0.1)
        assert r["output_tokens"] == 8 and r["completion_tokens"] == 8 and r["cached_tokens"] == 16
        assert r["prompt_tokens"] == rec.prompt_len
    body = bodies[0]
    assert body["model"] == "m-a" and body["prompt"] == list(range(10, 42)) and body["max_tokens"] == 8
    assert body["stream"] is True and body["ignore_eos"] is True and body["temperature"] == 0
    assert body["stream_options"] == {"include_usage": True}
    summary = loadgen.summarize(records)
    assert summary["completed"] == 2 and summary["failed"] == 0
    assert summary["ttft_s"]["mean"] == pytest.approx(0.2, abs=0.06)
    assert summary["tpot_s"]["mean"] == pytest.approx(0.05, abs=0.015)


def test_arrivals_are_open_loop_a_slow_request_does_not_delay_later_sends():
    # the first request (prompt of 50) takes 1.5 s more before its first token
    with FakeVllm(first_s=0.05, itl_s=0.01, slow={50: 1.5}) as srv:
        t0, records = loadgen.run_open_loop(_jobs("a", [0.0, 0.2, 0.4, 0.6], [50, 10, 11, 12], 2),
                                            {"a": srv.endpoint()})
        arrivals = [t - t0 for t, _ in srv.received]
    for rec in records:
        assert rec.sent_s - rec.due_s < 0.05, "a send waited for an earlier request"
    assert [round(a, 1) for a in sorted(arrivals)] == [0.0, 0.2, 0.4, 0.6]
    assert records[0].to_json()["ttft_s"] > 1.5
    assert records[1].end_s < records[0].end_s  # later requests finished before the slow one


def test_several_servers_from_one_trace():
    with FakeVllm(first_s=0.05, itl_s=0.01) as a, FakeVllm(first_s=0.3, itl_s=0.01) as b:
        jobs = sorted(_jobs("a", [0.0, 0.1], [10, 10], 3) + _jobs("b", [0.05], [10], 3), key=lambda j: j[1].arrival_s)
        _, records = loadgen.run_open_loop(jobs, {"a": a.endpoint("ma"), "b": b.endpoint("mb")})
        assert len(a.received) == 2 and len(b.received) == 1
        assert b.received[0][1]["model"] == "mb"
    by = loadgen.summarize_by_server(records)
    assert by["a"]["completed"] == 2 and by["b"]["completed"] == 1
    assert by["b"]["ttft_s"]["mean"] == pytest.approx(0.3, abs=0.06)
    assert by["a"]["ttft_s"]["mean"] == pytest.approx(0.05, abs=0.04)


def test_http_errors_and_unreachable_servers_are_failed_requests_not_crashes():
    with FakeVllm(status=500) as srv:
        _, records = loadgen.run_open_loop(_jobs("a", [0.0], [10], 2), {"a": srv.endpoint()})
    assert records[0].error.startswith("HTTP 500") and "boom" in records[0].error
    _, records = loadgen.run_open_loop(_jobs("a", [0.0], [10], 2), {"a": loadgen.Endpoint("127.0.0.1", 1, "x")})
    assert records[0].error and "ConnectionRefused" in records[0].error
    assert loadgen.summarize(records)["completed"] == 0


def test_requests_past_the_timeout_are_cancelled_and_recorded():
    with FakeVllm(first_s=2.0) as srv:
        _, records = loadgen.run_open_loop(_jobs("a", [0.0], [10], 2), {"a": srv.endpoint()}, timeout_s=0.3)
    assert records[0].error.startswith("unfinished")
