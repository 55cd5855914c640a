"""The policy for long inputs: only the source document is ever cut.

A prompt is a template (instruction and field labels), the source (post, article or user
request) and, for revisions, the in-context completion. Only the source is shortened: its first
``max_tokens`` tokens are kept (news and posts put their key facts first) and " [...]" marks the
cut. The instruction, the labels and the in-context completion are never touched, so a model and
a judge always see the whole task. Tokens are the model's tokenizer's when one is given; with
none (an API engine), whitespace-separated words stand in for tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

CUT_MARK = " [...]"


@dataclass
class SourceBudget:
    max_tokens: int  # at most this many tokens of the source; 0 or less: no limit
    tokenizer: object | None = None  # a transformers tokenizer, or None for word counts

    def cut(self, text: str) -> str:
        if self.max_tokens <= 0:
            return text
        if self.tokenizer is None:
            words = text.split()
            return text if len(words) <= self.max_tokens else " ".join(words[: self.max_tokens]) + CUT_MARK
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoded["offset_mapping"]
        if len(offsets) <= self.max_tokens:
            return text
        end = offsets[self.max_tokens - 1][1]  # cut at a token boundary of the original text
        return text[:end].rstrip() + CUT_MARK
