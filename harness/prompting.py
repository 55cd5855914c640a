"""Turning a task's prompts into the exact text a model sees, for training and generation alike.

The task renders its template (and cuts the source to the token budget); this module wraps it in
the model's chat template for chat tasks (or when asked, on a fixed day: ``in_chat_template``),
splits revision prompts around the in-context completion, so the trainer can share the long part
before it between sequences, and says which special tokens come before a prompt's text
(``leading_tokens``), for the trainer and every engine alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import HarnessError
from harness.task import TextTask
from harness.truncation import SourceBudget

SENTINEL = "\u2063HARNESS-IN-CONTEXT\u2063"  # invisible separators: never in real text
FORMATS = ("auto", "raw", "chat")


CHAT_DATE = "26 Jul 2024"  # the day given to chat templates that print one (Llama 3.2's "Today Date"): their own fallback


def in_chat_template(tokenizer, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """``messages`` in ``tokenizer``'s chat template, as text. A template that prints today's date
    (Llama 3.2's and 3.3's, through ``date_string``) prints ``CHAT_DATE``: rendered on another day
    (a resumed run, a method added later, the judge), the same prompt would otherwise differ, and
    training, generation and stored results would no longer meet."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt, date_string=CHAT_DATE)


def leading_tokens(tokenizer, templated: bool) -> list[int]:
    """The token ids before a prompt's text: for a raw prompt, the special tokens the tokenizer puts
    before any text of its own accord (Llama's and Gemma's BOS; SmolLM2's and Qwen's put none), as
    TRL's DPOTrainer, vLLM and llama.cpp's server tokenize a raw prompt; for a chat-templated one
    none, the template having written them (a second BOS would follow the first)."""
    if templated:
        return []
    plain, marked = tokenizer("a", add_special_tokens=False)["input_ids"], tokenizer("a")["input_ids"]
    starts = (i for i in range(len(marked) - len(plain) + 1) if marked[i : i + len(plain)] == plain)
    return marked[: next(starts, 0)]  # an end-of-text token some tokenizers add after a text never ends a prompt


def prompt_token_ids(tokenizer, prompts: list[str], templated: bool) -> list[list[int]]:
    """Finished prompts as the token ids a local engine feeds the model: ``leading_tokens``, then
    the text, as the trainer scores a context (``harness.policies.lm.PairEncoder``)."""
    lead = leading_tokens(tokenizer, templated)
    return [lead + tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]


@dataclass
class PromptFormatter:
    task: TextTask
    tokenizer: object | None  # the model's: the token budget and its chat template; None: words stand in for tokens, no template here
    mode: str = "auto"  # "raw": template text as is; "chat": one user turn; "auto": chat for chat tasks
    apply_chat_template: bool = True  # False: a chat prompt stays the bare user turn, which an API server puts in the model's template

    def __post_init__(self):
        if self.mode not in FORMATS:
            raise HarnessError(f"prompt format must be one of {', '.join(FORMATS)}, got {self.mode!r}")
        self.budget = SourceBudget(self.task.max_source_tokens, self.tokenizer)
        self.use_chat = self.mode == "chat" or (self.mode == "auto" and self.task.chat)
        self.templated = self.use_chat and self.apply_chat_template and self.tokenizer is not None
        if self.templated and not getattr(self.tokenizer, "chat_template", None):
            raise HarnessError(f"task {self.task.registered_name!r} writes chat prompts, and the tokenizer of "
                               f"{getattr(self.tokenizer, 'name_or_path', '') or 'this model'!r} has no chat template (a base model?): "
                               "use an instruct model, or give this one the raw template with --train-arg prompt_format=raw")  # fmt: skip

    def _wrap(self, text: str) -> str:
        if not self.templated:
            return text
        return in_chat_template(self.tokenizer, [{"role": "user", "content": text}])

    def prompt(self, example: dict) -> str:
        """The 0-revision prompt, as the model sees it."""
        return self._wrap(self.task.prompt(example, self.budget))

    def revision_prompt(self, example: dict, previous: str) -> str:
        """The N-revision prompt with ``previous`` in context, as the model sees it."""
        before, after = self.revision_parts(example)
        return before + fill_in_context(after, previous)

    def revision_parts(self, example: dict) -> tuple[str, str]:
        """(text before the in-context completion, text after it). Whitespace that ends ``before``
        moves into the in-context part, so the shared prefix ends on a token boundary."""
        full = self._wrap(self.task.revision_prompt(example, SENTINEL, self.budget))
        before, found, after = full.partition(SENTINEL)
        if not found:
            raise HarnessError(f"task {self.task.registered_name!r}: the revision template does not place the previous completion")
        stripped = before.rstrip()
        return stripped, before[len(stripped) :] + "\0" + after  # "\0" marks where the completion goes

    def completion(self, text: str) -> str:
        """A completion as it follows the prompt: raw prompts end with "TL;DR:", so a space leads."""
        text = text.strip()
        return text if self.use_chat else " " + text


def _in_context(previous: str) -> str:
    return previous.strip()


def fill_in_context(after_template: str, previous: str) -> str:
    """``revision_parts``' second part with the in-context completion put in its place."""
    return after_template.replace("\0", _in_context(previous), 1)
