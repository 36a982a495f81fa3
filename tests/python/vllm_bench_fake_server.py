"""A stand-in for `vllm serve` in the harness's tests (a test fixture: no result ever comes
from it). It speaks vLLM's streaming completion format: SSE `data: {...}` chunks with
choices[0].token_ids over chunked transfer encoding, a final usage chunk, `data: [DONE]`; and
/health, /v1/models, /metrics (prefix-cache counters). Delays are injected: ``first_s`` before
the first token, ``itl_s`` between tokens.

    python3 vllm_bench_fake_server.py PORT NAME    (serves until killed)
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeVllm(ThreadingHTTPServer):
    """first_s before the first token, then itl_s between tokens; ``slow`` maps request ids'
    prompt lengths to an extra first-token delay. Records each request's body and arrival."""

    daemon_threads = True

    def __init__(self, first_s=0.2, itl_s=0.05, slow=None, status=200, port=0, name="fake"):
        super().__init__(("127.0.0.1", port), _Handler)
        self.name, self.metrics = name, 0
        self.first_s, self.itl_s, self.slow, self.status = first_s, itl_s, slow or {}, status
        self.received = []  # (time.perf_counter(), body)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()

    def endpoint(self, model="fake"):
        import loadgen

        return loadgen.Endpoint("127.0.0.1", self.server_address[1], model)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _chunk(self, data: bytes):
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def do_GET(self):
        if self.path == "/v1/models":
            body = json.dumps({"data": [{"id": self.server.name}]}).encode()
        elif self.path == "/metrics":
            self.server.metrics += 1
            body = (f"vllm:prefix_cache_queries_total{{engine=\"0\"}} {100 * self.server.metrics}\n"
                    f"vllm:prefix_cache_hits_total{{engine=\"0\"}} {30 * self.server.metrics}\n").encode()
        else:
            body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv = self.server
        srv.received.append((time.perf_counter(), body))
        if srv.status != 200:
            text = b'{"error": {"message": "boom"}}'
            self.send_response(srv.status)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        time.sleep(srv.first_s + srv.slow.get(len(body["prompt"]), 0.0))
        for i in range(body["max_tokens"]):
            if i:
                time.sleep(srv.itl_s)
            event = {"id": "cmpl-1", "object": "text_completion", "model": body["model"],
                     "choices": [{"index": 0, "text": "", "token_ids": [100 + i], "finish_reason": None}]}
            self._chunk(b"data: " + json.dumps(event).encode() + b"\n\n")
        usage = {"id": "cmpl-1", "choices": [], "usage": {
            "prompt_tokens": len(body["prompt"]), "completion_tokens": body["max_tokens"],
            "total_tokens": len(body["prompt"]) + body["max_tokens"], "prompt_tokens_details": {"cached_tokens": 16}}}
        self._chunk(b"data: " + json.dumps(usage).encode() + b"\n\n")
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")


if __name__ == "__main__":
    server = FakeVllm(first_s=0.02, itl_s=0.005, port=int(sys.argv[1]), name=sys.argv[2])
    server.serve_forever()
