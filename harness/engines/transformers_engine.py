"""The transformers engine: batched generation with left padding and the KV cache, CPU or GPU.

On a GPU, decoding a small model with the default (dynamic) cache waits on kernel launches;
``cache="static"`` lets transformers compile the step (then CUDA graphs): transformers keeps the
cache as long as the longest call so far, and torch compiles again only the first time the batch's
rows or the cache's length change, then for any size: a few compiles per run. ``cache="paged"``
hands the prompts to transformers' continuous batching (its manager: a paged KV cache, rows
leave as they finish, at EOS or cancelled at a stop string, and waiting prompts take their place, no
padding), with CUDA graphs on a GPU;
it decodes greedily only (its sampler draws from one global generator, not per row), and on a CPU
it is slower than the padded path.

Every method shares one copy of the base model: the LoRA adapter in use is merged into its weights
(``merge_adapters``), so that decoding runs the base model's kernels and modules only, and the
weights are restored exactly at the next switch. Sampling draws each row's token from that row's
own seeded uniforms (``SeededRowSampler``), so a sampled completion depends on its seed, not on
the other prompts of its batch: it is the same whether its run went whole or resumed.
"""

from __future__ import annotations

import functools
from contextlib import nullcontext
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch

from harness.batching import batch_limits, length_batches
from harness.config import PositiveInt
from harness.engine import Engine, Generation, SamplingParams, check_context, cut_at_stop, prompt_seeds, register
from harness.errors import HarnessError
from harness.models import adapted_layers, inference_placement, load_causal_lm, load_tokenizer, positions, resolve_model
from harness.prompting import prompt_token_ids


@register("transformers")
@dataclass
class TransformersEngine(Engine):
    """Local generation with transformers: batched, left-padded, KV-cached; LoRA adapters by peft."""

    sampler: ClassVar[str] = "inverse-cdf over per-row PCG64 uniforms"  # SeededRowSampler
    code_version: ClassVar[int] = 1  # 1: a completion ends at any end token the model lists too (end_token_ids), its token count and finish reason with it
    not_in_generations: ClassVar[frozenset[str]] = frozenset({"batch_size", "max_batch_tokens", "device"})  # how prompts are grouped and where they run; the precision the device leads to is in the key

    model: str = "smollm2-135m"  # base model: hub id, local folder or smollm2-135m
    batch_size: PositiveInt | Literal["auto"] = "auto"  # at most this many prompts per generate() call; "auto": 32 on a CPU; on a GPU up to 512, as many as max_batch_tokens and the KV cache's share of free memory allow (a decoding step waits on kernel launches, whatever its rows)
    max_batch_tokens: PositiveInt | Literal["auto"] = "auto"  # and at most this many (padded) prompt tokens; "auto": 4096 on a CPU (long prompts in small batches), 65536 on a GPU
    device: Literal["auto", "cuda", "cpu"] = "auto"  # "auto": CUDA when present, else CPU
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # "auto": bfloat16 on a GPU that has it, float32 otherwise
    cache: Literal["dynamic", "static", "paged"] = "dynamic"  # "static": a preallocated KV cache, which transformers compiles on a GPU (CUDA graphs): decoding stops waiting on kernel launches, after a few compiles per run; "paged": transformers' continuous batching, CUDA graphs without compiling, batch_size and max_batch_tokens bounding each forward (greedy only; for GPUs)
    pad_to_multiple: PositiveInt = 64  # with the static cache, prompts are padded to a multiple of this many tokens, so that the cache grows in steps of it (a CUDA graph is recorded per length)
    merge_adapters: bool = True  # generate through a LoRA adapter merged into the base weights (restored exactly after): a decoding step then runs the base model's kernels, not nearly twice as many; false computes the adapter beside the base, as in training

    def __post_init__(self):
        self._model = None
        self._adapters: dict[str, str] = {}  # merge_adapters false: adapter folder -> its name among peft's layers, which hold them all
        self._merged: str | None = None  # the adapter folder merged into the base weights now
        self._merged_into: list[tuple[torch.Tensor, torch.Tensor]] = []  # (weight it changed, its value as loaded, on the host)
        self._base_weights: dict[int, torch.Tensor] = {}  # id of a weight an adapter merged into -> its value as loaded, on the host

    def _load(self):
        if self._model is None:
            path = resolve_model(self.model)
            device, dtype = inference_placement(self.device, self.dtype)
            self._tokenizer = load_tokenizer(path)
            self._tokenizer.padding_side = "left"  # generation continues from the right end of every row
            self._model = load_causal_lm(path, dtype).to(device).eval().requires_grad_(False)  # as after any adapter: a compiled step guards on it
            self._end_tokens = end_token_ids(self._tokenizer, self._model.generation_config)
        return self._model

    def settled_options(self) -> dict:
        return {"dtype": inference_placement(self.device, self.dtype)[1]}

    def tokenizer(self):
        self._load()
        return self._tokenizer

    @property
    def chunk_size(self) -> int:
        """A batch's rows at most (``harness.batching``): 32 on a CPU and 512 on a GPU for "auto",
        a bound the token budgets reach first but for short prompts."""
        return batch_limits(self.batch_size, self.max_batch_tokens, inference_placement(self.device, self.dtype)[0] == "cpu")[0]

    def _use_adapter(self, adapter: str | None):
        """The model made ready to generate through ``adapter`` (None: the base model); a context
        to generate in."""
        self._load()
        if self.merge_adapters:
            self._merge(adapter)
            return nullcontext()
        if adapter is None:
            return self._model.disable_adapter() if self._adapters else nullcontext()
        if adapter not in self._adapters:
            from peft import PeftModel

            name = f"a{len(self._adapters)}"
            if not self._adapters:
                self._model = PeftModel.from_pretrained(self._model, adapter, adapter_name=name).eval()
            else:
                self._model.load_adapter(adapter, adapter_name=name)
            self._adapters[adapter] = name
        self._model.set_adapter(self._adapters[adapter])
        return nullcontext()

    def _merge(self, adapter: str | None) -> None:
        """The base weights with ``adapter`` merged in (W + scale * B A; None: as loaded), once per
        switch: the calls of one method follow each other, since generation goes method by method.

        peft wraps the base model's layers to merge and unwraps them after, so the model keeps the
        base model's own modules and parameters whichever adapter it holds: a compiled decoding
        step (``cache="static"``) then serves every method, where peft's layers would recompile it
        for each adapter and, past torch's recompile limit, fall back to running uncompiled."""
        if self._merged == adapter:
            return
        with torch.no_grad():  # the base weights as loaded: subtracting an adapter again would round (bf16) and drift them
            for weight, loaded in self._merged_into:
                weight.copy_(loaded)
        self._merged, self._merged_into = None, []
        if adapter is None:
            return
        from peft import PeftModel

        wrapped = PeftModel.from_pretrained(self._model, adapter)
        for layer in adapted_layers(wrapped):
            for p in (layer.get_base_layer().weight, layer.get_base_layer().bias):
                if p is not None:
                    if id(p) not in self._base_weights:  # a host copy of each weight, taken once
                        self._base_weights[id(p)] = p.detach().to("cpu", copy=True)
                    self._merged_into.append((p, self._base_weights[id(p)]))
        self._model = wrapped.merge_and_unload()  # the same base model object, its layers unwrapped
        self._merged = adapter

    def check_sampling(self, params: SamplingParams) -> None:
        if self.cache == "paged" and not params.greedy:
            raise HarnessError("engine option cache=paged decodes greedily only (continuous batching draws sampled tokens from one "
                               "generator shared by every row, so a text would depend on its batch): use --temperature 0, "
                               "or cache=dynamic or cache=static to sample")  # fmt: skip

    @torch.no_grad()
    def generate(self, prompts, params: SamplingParams, adapter=None, stop=(), seeds=None, chat=False) -> list[Generation]:
        self.check_sampling(params)
        tokenizer = self.tokenizer()
        encoded = prompt_token_ids(tokenizer, prompts, templated=chat)
        with self._use_adapter(adapter):
            limit = positions(self._model)
            check_context(encoded, params.max_new_tokens, limit, f"the model's {limit} positions", "lower --max-new-tokens or --task-arg max_source_tokens")
            if self.cache == "paged":
                completions = self._continuous(encoded, params, stop)
            else:
                completions = self._padded(encoded, params, stop, prompt_seeds(params, len(prompts), seeds))
        ends = set(self._end_tokens)
        out = []
        for prompt, row in zip(encoded, completions):
            text_end = next((i for i, t in enumerate(row) if t in ends), len(row))  # padding follows a row's end token
            text, hit = cut_at_stop(tokenizer.decode(row[:text_end], skip_special_tokens=True), stop)
            n = _tokens_to_stop(tokenizer, row[:text_end], stop) if hit else min(text_end + 1, len(row))  # the tokens of the text kept, and its end token
            out.append(Generation(text.strip(), len(prompt), n, "stop" if hit or text_end < len(row) else "length"))
        return out

    def _padded(self, encoded: list[list[int]], params: SamplingParams, stop: tuple[str, ...], seeds: list[int]) -> list[list[int]]:
        """Every prompt's new tokens, by ``generate`` over left-padded batches of similar lengths."""
        tokenizer, model = self._tokenizer, self._model
        out: list[list[int]] = [[] for _ in encoded]
        multiple = self.pad_to_multiple if self.cache == "static" else None
        cache_tokens = kv_cache_budget(model) if self.batch_size == "auto" else None  # an explicit batch size is the user's call
        for idx in self._batches(encoded, model.device, params.max_new_tokens, multiple or 1, cache_tokens):
            enc = tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, pad_to_multiple_of=multiple, return_tensors="pt").to(model.device)
            sampler = None if params.greedy else [SeededRowSampler([seeds[i] for i in idx], params.temperature, params.top_p, params.max_new_tokens, model.device)]
            stopping = [_StopAfterText(tokenizer, stop, enc["input_ids"].shape[1], model.device)] if stop else None
            try:
                generated = model.generate(
                    **enc, max_new_tokens=params.max_new_tokens, do_sample=False, logits_processor=sampler,
                    eos_token_id=self._end_tokens, pad_token_id=tokenizer.pad_token_id, stopping_criteria=stopping,
                    cache_implementation="static" if self.cache == "static" else None,  # None: transformers' default
                )  # fmt: skip
            except torch.cuda.OutOfMemoryError:  # the settings against the card: say which to lower
                rows, width = enc["input_ids"].shape
                raise HarnessError(f"out of accelerator memory generating {rows} prompts of {width} tokens: lower --engine-arg batch_size "
                                   f"(now {self.batch_size}) or max_batch_tokens (now {self.max_batch_tokens}); completions "
                                   "already written are kept") from None  # fmt: skip
            for i, row in zip(idx, generated[:, enc["input_ids"].shape[1] :].tolist()):  # left padding aligns every prompt's end
                out[i] = row
        return out

    def _continuous(self, encoded: list[list[int]], params: SamplingParams, stop: tuple[str, ...]) -> list[list[int]]:
        """Every prompt's new tokens (EOS included), by transformers' continuous batching. It stops
        rows at EOS only, so with stop strings every row streams its tokens, and a row whose newest
        token completes a stop string is cancelled: its place goes to a waiting prompt, as at EOS.
        ``batch_size`` and ``max_batch_tokens`` bound each of its forwards when given; "auto" leaves
        transformers to size them from the accelerator's memory."""
        from transformers import ContinuousBatchingConfig, GenerationConfig
        from transformers.generation.continuous_batching.utils import WorkloadHints

        tokenizer, model = self._tokenizer, self._model
        config = GenerationConfig(max_new_tokens=params.max_new_tokens, do_sample=False, eos_token_id=self._end_tokens, pad_token_id=tokenizer.pad_token_id)
        page = ContinuousBatchingConfig.page_size  # tokens a block of KV cache holds, every layer
        need = sum(-(-(len(p) + params.max_new_tokens) // page) for p in encoded)  # blocks holding every prompt at once
        budget = kv_cache_budget(model)  # None on a CPU, where transformers would size the cache from the host's memory
        batching = ContinuousBatchingConfig(
            num_blocks=need if budget is None or need * page <= budget else None,  # None: as many as memory allows, rows then wait their turn
            max_requests_per_batch=None if self.batch_size == "auto" else self.batch_size,
            max_batch_tokens=None if self.max_batch_tokens == "auto" else self.max_batch_tokens,
            use_cuda_graph=True if model.device.type == "cuda" else None,  # the point on a GPU; transformers turns graphs off where attention takes a mask (sdpa)
        )  # fmt: skip
        hints = WorkloadHints(max_prompt_length=max(map(len, encoded)), max_generated_length=params.max_new_tokens, num_requests=len(encoded))
        ended = StopText(tokenizer, stop)
        tokens: dict[str, list[int]] = {}  # request id -> its new tokens, once it ended
        failure = None
        try:
            with model.continuous_batching_context_manager(generation_config=config, continuous_batching_config=batching, block=True, timeout=5, workload_hints=hints) as manager:
                ids = manager.add_requests(inputs=encoded, max_new_tokens=params.max_new_tokens, streaming=bool(stop))
                while len(tokens) < len(ids) and failure is None:
                    result = manager.get_result(timeout=1)
                    if result is None:
                        failure = None if manager.is_running() else "its generation thread stopped"
                    elif result.error is not None:
                        failure = result.error
                    elif result.request_id in tokens:  # streamed before its cancel took effect
                        continue
                    elif result.is_finished():
                        tokens[result.request_id] = list(result.generated_tokens)
                    elif ended(result.generated_tokens):
                        manager.cancel_request(result.request_id)
                        tokens[result.request_id] = list(result.generated_tokens)
        except (MemoryError, torch.cuda.OutOfMemoryError):
            raise HarnessError(f"out of accelerator memory for continuous batching of {len(encoded)} prompts: lower --engine-arg "
                               f"max_batch_tokens (now {self.max_batch_tokens}) or use cache=dynamic; completions already written "
                               "are kept") from None  # fmt: skip
        if failure is not None:
            raise HarnessError(f"continuous batching (engine option cache=paged) finished {len(tokens)} of {len(encoded)} prompts "
                               f"({failure}); completions already written are kept: rerun, or use cache=dynamic")  # fmt: skip
        return [tokens[i] for i in ids]

    def _batches(self, encoded: list[list[int]], device: torch.device, new_tokens: int, multiple: int = 1, cache_tokens: int | None = None) -> list[list[int]]:
        """Prompt indices grouped by length within ``batch_size`` prompts, ``max_batch_tokens``
        padded prompt tokens and ``cache_tokens`` tokens of KV cache (each row its padded prompt and
        ``new_tokens``; None: no limit), as ``harness.batching`` groups them."""
        rows, tokens = batch_limits(self.batch_size, self.max_batch_tokens, device.type == "cpu")
        return length_batches(list(map(len, encoded)), rows, tokens, multiple, new_tokens, cache_tokens)

    def close(self) -> None:
        self._model = None
        self._adapters, self._merged, self._merged_into, self._base_weights = {}, None, [], {}


def end_token_ids(tokenizer, generation_config) -> list[int]:
    """The tokens at which a completion ends: the tokenizer's EOS, which the trainer puts after
    every completion, then those the model's generation config lists (Llama 3.1 Instruct's
    ``<|eom_id|>`` and ``<|end_of_text|>``, Qwen's ``<|endoftext|>``), where vLLM and
    OpenAI-compatible servers stop too: each engine ends a model's text at the same token."""
    listed = generation_config.eos_token_id
    listed = [] if listed is None else [listed] if isinstance(listed, int) else list(listed)
    return [t for t in dict.fromkeys([tokenizer.eos_token_id, *listed]) if t is not None]


KV_CACHE_SHARE = 0.5  # of the accelerator memory free after loading: the rest is the prompts' forward (its activations) and the allocator's slack


def kv_cache_bytes_per_token(config, dtype: torch.dtype) -> int:
    """Bytes of KV cache one token takes: a key and a value per layer and key-value head."""
    text = config.get_text_config()
    heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return 2 * text.num_hidden_layers * heads * head_dim * dtype.itemsize


def kv_cache_budget(model) -> int | None:
    """How many tokens of KV cache (every row's prompt and completion) a batch may hold on this
    accelerator: a share of the memory free with the model loaded (what the allocator holds
    unused counts as free); None on a CPU, whose batches are bounded by prefill time long before."""
    if model.device.type != "cuda":
        return None
    free = torch.cuda.mem_get_info(model.device)[0] + torch.cuda.memory_reserved(model.device) - torch.cuda.memory_allocated(model.device)
    return int(KV_CACHE_SHARE * free) // kv_cache_bytes_per_token(model.config, model.dtype)


class SeededRowSampler:
    """Samples every row's next token with temperature and top-p by inverse transform: row b's
    draw at step t is its t-th uniform from a generator seeded with its own seed (numpy's PCG64, on
    the host, all steps drawn before decoding), so a draw depends on the row's seed and step alone,
    not on its batch nor on the device; ``generate`` (run greedy) then gets scores that leave only
    that token. A step is the same 12 operations (18 with top-p) whatever the batch's rows, where a
    device generator per row took a multinomial draw per row: 525 operations a step at 512 rows,
    beside the ~1,200 of a 1B Llama's whole decoding step, each a kernel launch on a GPU."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float, steps: int, device):
        uniforms = np.stack([np.random.default_rng(s).random(steps) for s in seeds])  # [B, steps] in [0, 1)
        self.uniforms = torch.from_numpy(uniforms).to(device)  # [B, steps] float64
        self.temperature, self.top_p = temperature, top_p
        self.step = 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)  # [B, V]
        order = None
        if self.top_p < 1:
            probs, order = probs.sort(dim=-1, descending=True)
            probs = probs.masked_fill(probs.cumsum(dim=-1) - probs > self.top_p, 0.0)  # the nucleus: the top tokens up to mass top_p
        cdf = probs.cumsum(dim=-1)  # [B, V]
        # [B, 1] in (0, total]: the uniform times the row's total mass as it rounded, so that a target always lands on a token
        target = (self.uniforms[:, self.step, None] * cdf[:, -1:]).float().clamp_(min=torch.finfo(torch.float32).tiny)
        picks = torch.searchsorted(cdf, target)  # [B, 1]: the first token whose cumulative mass reaches it, never a zero-mass one
        if order is not None:
            picks = order.gather(-1, picks)
        self.step += 1
        return torch.full_like(scores, float("-inf")).scatter_(-1, picks, 0.0)


class StopText:
    """Whether a completion's tokens hold a stop string after some text: transformers' own
    ``stop_strings`` would also stop on the newline a model often starts with. A stop string can
    only be completed by a token holding its last character, so a call decodes only when the
    newest token is such a token: most calls decode nothing."""

    def __init__(self, tokenizer, stop: tuple[str, ...]):
        self.tokenizer, self.stop = tokenizer, stop
        self.finishers = frozenset(_finishing_token_list(tokenizer, stop))  # a set: one host lookup per token

    def __call__(self, tokens: list[int]) -> bool:
        if not tokens or tokens[-1] not in self.finishers:
            return False
        return cut_at_stop(self.tokenizer.decode(tokens, skip_special_tokens=True), self.stop)[1]


class _StopAfterText:
    """Ends a row of ``generate`` once its completion holds a stop string after some text
    (``StopText``); a step looks up every row's newest token on the device and decodes only the
    rows it could have ended: no step decodes every row."""

    def __init__(self, tokenizer, stop: tuple[str, ...], prompt_length: int, device):
        self.ended, self.prompt_length = StopText(tokenizer, stop), prompt_length
        self.finishers = _finishing_tokens(tokenizer, stop).to(device)  # [V] bool
        self.done = None

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        if self.done is None:
            self.done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)  # [B]
        newest = input_ids[:, -1].clamp(max=self.finishers.numel() - 1)
        check = self.finishers[newest] & ~self.done  # [B]: rows a stop string could have just ended
        if check.any():
            rows = check.nonzero().flatten().tolist()
            hits = [r for r in rows if self.ended(input_ids[r, self.prompt_length :].tolist())]
            self.done[hits] = True
        return self.done.clone()


def _tokens_to_stop(tokenizer, row: list[int], stop: tuple[str, ...]) -> int:
    """The fewest leading tokens of ``row`` whose text holds a stop string (``row``'s does), by
    bisection: a few decodes, where each row's stop string was found."""
    lo, hi = 0, len(row)  # row[:lo] holds none, row[:hi] holds one
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if cut_at_stop(tokenizer.decode(row[:mid], skip_special_tokens=True), stop)[1]:
            hi = mid
        else:
            lo = mid
    return hi


@functools.lru_cache(maxsize=8)
def _finishing_token_list(tokenizer, stop: tuple[str, ...]) -> tuple[int, ...]:
    last = {s[-1] for s in stop if s}
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    texts = [tokenizer.convert_tokens_to_string([t]) if t is not None else "" for t in vocab]
    return tuple(i for i, text in enumerate(texts) if any(ch in text for ch in last))


def _finishing_tokens(tokenizer, stop: tuple[str, ...]) -> torch.Tensor:
    """[V] bool: the tokens whose text holds the last character of a stop string."""
    mask = torch.zeros(len(tokenizer), dtype=torch.bool)
    mask[list(_finishing_token_list(tokenizer, stop))] = True
    return mask
