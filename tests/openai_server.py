"""A small OpenAI-compatible HTTP server for tests and benchmarks: real sockets, real JSON.

It answers /v1/chat/completions and /v1/completions with a function of the prompt, after an
optional delay, and can be told to fail the next requests with given statuses (429, 500), to hang
past the client's timeout, or to answer with text no parser accepts. It counts what it served.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


class FakeOpenAIServer:
    def __init__(self, answer: Callable[[str], str], delay: float = 0.0):
        self.answer = answer  # prompt (the last user message, or the raw prompt) -> completion text
        self.delay = delay  # seconds before each answer
        self.faults: deque = deque()  # "429", "500", "hang", "garbage": one per coming request
        self.requests = 0  # every request received, failed ones included
        self.served = 0  # requests answered with 200
        self.prompts: list[str] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with server._lock:
                    server.requests += 1
                    fault = server.faults.popleft() if server.faults else None
                if fault in ("429", "500"):
                    return self._send(int(fault), {"error": {"message": f"injected {fault}", "type": "test"}})
                if fault == "hang":
                    time.sleep(30)
                    return
                if server.delay:
                    time.sleep(server.delay)
                if self.path.endswith("/chat/completions"):
                    prompt = body["messages"][-1]["content"]
                    text = "I cannot decide, both are fine." if fault == "garbage" else server.answer(prompt)
                    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    kind = "chat.completion"
                else:
                    prompt = body["prompt"]
                    text = "I cannot decide." if fault == "garbage" else server.answer(prompt)
                    choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
                    kind = "text_completion"
                with server._lock:
                    server.served += 1
                    server.prompts.append(prompt)
                self._send(200, {"id": f"cmpl-{server.served}", "object": kind, "created": int(time.time()), "model": body.get("model", "m"),
                                 "choices": [choice], "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split()),
                                                                "total_tokens": len(prompt.split()) + len(text.split())}})  # fmt: skip

            def _send(self, status: int, payload: dict):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._httpd.shutdown()
        self._httpd.server_close()
