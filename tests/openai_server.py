"""A small OpenAI-compatible HTTP server for tests and benchmarks: real sockets, real JSON.

It answers /v1/chat/completions and /v1/completions with a function of the prompt, after an
optional delay, and can be told to fail the next requests with given statuses (429, 500), to hang
past the client's timeout, or to answer with text no parser accepts. It counts what it served.
It runs on aiohttp in a thread of its own, so a thousand requests in flight cost no thread each.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import Callable

from aiohttp import web


class FakeOpenAIServer:
    def __init__(self, answer: Callable[[str], str], delay: float = 0.0):
        self.answer = answer  # prompt (the last user message, or the raw prompt) -> completion text
        self.delay = delay  # seconds before each answer
        self.faults: deque = deque()  # "429", "500", "hang", "garbage": one per coming request
        self.requests = 0  # every request received, failed ones included
        self.served = 0  # requests answered with 200
        self.prompts: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests += 1  # one event loop: no lock needed
        fault = self.faults.popleft() if self.faults else None
        if fault in ("429", "500"):
            headers = {"Retry-After": "0"} if fault == "429" else {}
            return web.json_response({"error": {"message": f"injected {fault}", "type": "test"}}, status=int(fault), headers=headers)
        if fault == "hang":
            await asyncio.sleep(30)
        if self.delay:
            await asyncio.sleep(self.delay)
        chat = request.path.endswith("/chat/completions")
        prompt = body["messages"][-1]["content"] if chat else body["prompt"]
        text = "I cannot decide, both are fine." if fault == "garbage" else self.answer(prompt)
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        else:
            choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
        self.served += 1
        self.prompts.append(prompt)
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split())}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return web.json_response({"id": f"cmpl-{self.served}", "object": "chat.completion" if chat else "text_completion",
                                  "created": int(time.time()), "model": body.get("model", "m"), "choices": [choice], "usage": usage})  # fmt: skip

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_post("/v1/completions", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)  # a "hang" must not hold the exit
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self._started.set()
        self._loop.run_forever()

    def __enter__(self):
        self._thread.start()
        self._started.wait(10)
        return self

    def __exit__(self, *exc):
        async def stop():
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def main() -> None:
    """Serve in a process of its own (benchmarks: no GIL shared with the client being measured)."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--answer", default="A is tighter.\nPreferred: A")
    args = parser.parse_args()
    with FakeOpenAIServer(lambda prompt: args.answer, delay=args.delay) as server:
        print(server.base_url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
