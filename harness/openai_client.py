"""Talking to OpenAI-compatible servers (OpenAI, vLLM, llama.cpp), for judges and the openai engine.

What real servers taught (see tests/openai_server.py): a local server often answers one request
at a time and queues the rest, so many requests in flight only wait past their timeout; a refused
request (400, 401, 404) never succeeds on a retry; and a key meant for OpenAI must not travel to
another host. So:

- ``send`` makes every attempt itself (the ``openai`` client's own retries are off), so each HTTP
  request is counted; it retries 429, 5xx, timeouts and dropped connections with exponential
  backoff and jitter (honouring Retry-After), never a refused request, and its error says which
  it was and what to do;
- ``AdaptiveLimit`` halves the requests in flight after a timeout and grows them back by one
  after a run of answers (additive increase, multiplicative decrease): a queueing server settles
  at what it can take, and a timed-out request is retried, never dropped;
- ``api_key`` reads the key from the environment only, and sends one to a server other than
  OpenAI's only when the user names the variable.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from dataclasses import dataclass, field
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator

from harness.errors import HarnessError

OPENAI_URL = "https://api.openai.com/v1"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
OTHER_SERVER_IN_FLIGHT = 4  # a local server often answers one request at a time and queues the rest


def is_openai(base_url: str) -> bool:
    """Whether ``base_url`` (empty: the client's default) is OpenAI's own API."""
    return not base_url or base_url.rstrip("/") == OPENAI_URL


def _server_url(url: str) -> str:
    """``url`` unchanged when it can be a server's address (empty: OpenAI's API); a malformed one
    would otherwise be found by the stage that first sends to it, after training."""
    parts = urlsplit(url)
    if url and (parts.scheme not in ("http", "https") or not parts.hostname):
        raise ValueError(f"must be empty (OpenAI's API) or an http:// or https:// address such as http://127.0.0.1:8000/v1, got {url!r}")
    if parts.password:  # not echoed: this message is printed, and may be logged
        raise ValueError("holds a password (user:password@), which the run would write into its config.json, manifest.json and page; "
                         "a key is read from the environment only: put it in a variable and pass api_key_env=NAME (sent as a bearer token)")
    return url


BaseURL = Annotated[str, AfterValidator(_server_url)]  # the base_url option of a judge or engine behind an OpenAI-compatible API


def in_flight(concurrency: int | str, base_url: str, for_openai: int) -> int:
    """Requests in flight to start with: ``concurrency`` when set, else ("auto") ``for_openai`` for
    OpenAI's API and a few for any other server (``AdaptiveLimit`` adjusts from there)."""
    if concurrency != "auto":
        return int(concurrency)
    return for_openai if is_openai(base_url) else OTHER_SERVER_IN_FLIGHT


def api_key(env_name: str, base_url: str) -> str:
    """The key for ``base_url``: from ``env_name`` when given; for OpenAI's API from
    OPENAI_API_KEY; for any other server none (the client insists on a string, so a placeholder)."""
    if env_name:
        key = os.environ.get(env_name)
        if not key:
            raise HarnessError(f"no API key: the environment variable {env_name} is not set (keys are read from the environment only)")
        return key
    if is_openai(base_url):
        key = os.environ.get(DEFAULT_KEY_ENV)
        if not key:
            raise HarnessError(f"no API key: set the environment variable {DEFAULT_KEY_ENV} (it is read from the environment only)")
        return key
    return "no-key"  # a custom server gets a key only when the user names its variable (api_key_env=NAME)


def make_client(base_url: str, key_env: str, timeout: float):
    from openai import AsyncOpenAI

    return AsyncOpenAI(api_key=api_key(key_env, base_url), base_url=base_url or None, max_retries=0, timeout=timeout)


async def served_models(client) -> list[str]:
    """The model names the server lists at /v1/models."""
    from openai import APIError

    try:
        page = await client.models.list()
    except APIError as exc:
        raise HarnessError(f"cannot list the models of {client.base_url}: {type(exc).__name__}: {str(exc)[:200]}") from None
    return [m.id for m in page.data]


class AdaptiveLimit:
    """Requests in flight: at most ``limit``, halved on a timeout, grown by one after ``limit``
    answers in a row, never above ``ceiling``."""

    def __init__(self, start: int):
        self.limit = self.ceiling = max(1, start)
        self.in_flight = 0
        self.streak = 0
        self._changed = asyncio.Condition()

    async def __aenter__(self):
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1

    async def __aexit__(self, *exc):
        async with self._changed:
            self.in_flight -= 1
            self._changed.notify_all()

    def timed_out(self) -> None:
        self.limit = max(1, self.limit // 2)
        self.streak = 0

    def answered(self) -> None:
        self.streak += 1
        if self.streak >= self.limit and self.limit < self.ceiling:
            self.limit += 1
            self.streak = 0


@dataclass
class Usage:
    """What talking to the server cost, every attempt counted."""

    requests: int = 0  # HTTP requests sent, retries included
    answered: int = 0  # requests that came back with an answer
    retried: int = 0  # attempts repeated after a 429, 5xx, timeout or dropped connection
    timeouts: int = 0  # requests abandoned after ``timeout`` seconds (the server may still have spent tokens on them)
    refused: int = 0  # requests the server refused (400, 401, 404...), not retried
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: dict = field(default_factory=dict)  # kind of failure -> count

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "errors"} | {f"errors_{k}": v for k, v in self.errors.items()}


def _advice(status: int | None, code: str, key_env: str, what: str) -> str:
    if code == "context_length_exceeded":
        return f"the prompt is longer than the model's context: cut the source shorter ({what})"
    if status == 401:
        return f"check the key in ${key_env or DEFAULT_KEY_ENV}"
    if status == 404:
        return "check the model name against the server's /v1/models"
    return "fix the request or the server, then rerun: failed requests are retried"


async def send(client, endpoint: str, request: dict, limit: AdaptiveLimit, usage: Usage, max_retries: int, key_env: str = "",
               cut_hint: str = "") -> tuple[dict | None, str]:  # fmt: skip
    """POST ``request`` to ``endpoint`` ("chat" or "completions"): (response body, "") or
    (None, why it failed, with what was retried and what to do)."""
    from openai import APIConnectionError, APIStatusError, APITimeoutError

    create = client.chat.completions if endpoint == "chat" else client.completions
    for attempt in range(max_retries + 1):
        async with limit:
            usage.requests += 1
            try:
                response = await create.with_raw_response.create(**request)  # the raw body: no pydantic models for two fields
                body = json.loads(response.text)
            except APITimeoutError:
                usage.timeouts += 1
                limit.timed_out()
                why, retry_after = f"timed out after {client.timeout:g} s", None
            except APIConnectionError as exc:
                why, retry_after = f"connection failed ({type(exc.__cause__).__name__ if exc.__cause__ else exc})", None
            except APIStatusError as exc:
                status = exc.status_code
                detail = (exc.body or {}).get("message") if isinstance(exc.body, dict) else None
                code = (exc.body or {}).get("code") if isinstance(exc.body, dict) else ""
                why = f"HTTP {status}{' ' + code if code else ''}: {(detail or str(exc))[:200]}"
                usage.errors[str(status)] = usage.errors.get(str(status), 0) + 1
                if status != 429 and status < 500:
                    usage.refused += 1
                    return None, f"{why}; refused, not retried: {_advice(status, code or '', key_env, cut_hint)}"
                retry_after = exc.response.headers.get("retry-after") if exc.response is not None else None
            else:
                usage.answered += 1
                limit.answered()
                counts = body.get("usage") or {}
                usage.prompt_tokens += counts.get("prompt_tokens") or 0
                usage.completion_tokens += counts.get("completion_tokens") or 0
                return body, ""
        if attempt < max_retries:
            usage.retried += 1
            wait = float(retry_after) if retry_after and str(retry_after).replace(".", "", 1).isdigit() else min(20.0, 0.25 * 2**attempt)
            await asyncio.sleep(wait * random.uniform(0.5, 1.0) if not retry_after else wait)
    return None, f"{why} after {max_retries + 1} attempt(s) ({max_retries} retries with backoff); rerun to retry it, or raise --judge-arg/--engine-arg timeout or max_retries"
