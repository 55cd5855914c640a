"""The vLLM engine (optional extra ``pip install preference-harness[vllm]``, GPU only).

LoRA adapters go through vLLM's ``LoRARequest``, one id per adapter folder; tensor parallelism
through ``tensor_parallel_size``. Prompts go to vLLM as token ids, tokenized as the trainer and the
transformers engine tokenize them (``harness.prompting.prompt_token_ids``: the BOS before a raw
prompt, none before a chat template's own): given text, vLLM would put a second BOS before a chat
template's. Status: written against vLLM's documented offline API (``LLM.generate`` with
``SamplingParams``, token prompts and ``lora_request``) and not yet run on a GPU in this project's
CI; see the README.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from typing import Annotated, ClassVar

from pydantic import Field

from harness.config import PositiveInt
from harness.engine import Engine, Generation, SamplingParams, check_context, cut_server_completion, prompt_seeds, register, stopped_before_text
from harness.errors import HarnessError
from harness.models import resolve_model
from harness.prompting import prompt_token_ids

NEEDS_VLLM = "engine 'vllm' needs vLLM: pip install 'preference-harness[vllm]' (GPU machines only)"


@register("vllm")
@dataclass
class VLLMEngine(Engine):
    """vLLM on GPUs: paged attention, continuous batching, LoRA requests, tensor parallel."""

    not_in_generations: ClassVar[frozenset[str]] = frozenset({"gpu_memory_utilization"})  # how much KV cache it holds, not what it decodes
    code_version: ClassVar[int] = 2  # 1: a row the server ended at a stop string before any text is asked again (stopped_before_text); 2: prompts as token ids, tokenized as the trainer tokenizes them

    model: str = "smollm2-135m"  # base model: hub id, local folder or smollm2-135m
    tensor_parallel_size: PositiveInt = 1  # GPUs per model
    max_lora_rank: PositiveInt = 16  # at least the trained adapters' rank
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.85  # fraction of GPU memory vLLM may take
    max_model_len: PositiveInt = 4096  # context length to reserve KV cache for

    def __post_init__(self):
        self._llm = None
        self._lora_ids: dict[str, int] = {}

    def check_access(self) -> None:
        if "vllm" not in sys.modules and importlib.util.find_spec("vllm") is None:  # found, not imported: its import is heavy
            raise HarnessError(NEEDS_VLLM)

    def _load(self):
        if self._llm is None:
            try:
                from vllm import LLM
            except ImportError:
                raise HarnessError(NEEDS_VLLM) from None
            self._llm = LLM(
                model=resolve_model(self.model), enable_lora=True, max_lora_rank=self.max_lora_rank,
                tensor_parallel_size=self.tensor_parallel_size, gpu_memory_utilization=self.gpu_memory_utilization,
                max_model_len=self.max_model_len,
            )  # fmt: skip
        return self._llm

    @property
    def chunk_size(self) -> int:
        return 256  # vLLM schedules whatever it is given: large chunks keep its batches full

    def tokenizer(self):
        return self._load().get_tokenizer()

    def generate(self, prompts, params: SamplingParams, adapter=None, stop=(), seeds=None, chat=False) -> list[Generation]:
        from vllm import SamplingParams as VLLMSampling
        from vllm.lora.request import LoRARequest

        llm = self._load()
        request = None
        if adapter is not None:
            lora_id = self._lora_ids.setdefault(adapter, len(self._lora_ids) + 1)
            request = LoRARequest(f"adapter{lora_id}", lora_id, adapter)

        def sampling(seed: int, stops: tuple[str, ...]):
            return VLLMSampling(temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_new_tokens, seed=seed, stop=list(stops) or None)

        seeds = prompt_seeds(params, len(prompts), seeds)  # one per prompt: a text does not depend on its batch
        encoded = prompt_token_ids(llm.get_tokenizer(), prompts, templated=chat)
        check_context(encoded, params.max_new_tokens, self.max_model_len, f"--engine-arg max_model_len={self.max_model_len}",
                      "raise it (up to the model's context), or lower --max-new-tokens or --task-arg max_source_tokens")  # fmt: skip
        tokens = [{"prompt_token_ids": ids} for ids in encoded]  # vLLM's TokensPrompt
        outputs = llm.generate(tokens, [sampling(s, stop) for s in seeds], lora_request=request, use_tqdm=False)
        again = [i for i, out in enumerate(outputs) if stopped_before_text(out.outputs[0].text, out.outputs[0].finish_reason, stop)]
        if again:  # they opened on a stop string: asked again without stop strings, cut here
            redone = llm.generate([tokens[i] for i in again], [sampling(seeds[i], ()) for i in again], lora_request=request, use_tqdm=False)
            for i, out in zip(again, redone):
                outputs[i] = out
        results = []
        for out in outputs:
            best = out.outputs[0]
            text, finish = cut_server_completion(best.text, best.finish_reason, stop)
            results.append(Generation(text, len(out.prompt_token_ids), len(best.token_ids), finish))
        return results

    def close(self) -> None:
        self._llm = None
