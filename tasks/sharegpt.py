"""ShareGPT (Vicuna's cleaned crawl of ChatGPT conversations): the SFT data of the paper's Arena-Hard
protocol (Appendix D: LLaMA-3.1-8B, SFT on ShareGPT, then preference training on UltraFeedback).

Hub source: ``anon8231489123/ShareGPT_Vicuna_unfiltered`` (the paper's footnote 6), its file
``ShareGPT_V3_unfiltered_cleaned_split_no_imsorry.json``: one JSON array of ``{id, conversations:
[{from: human|gpt, value}, ...]}``. A local copy of that file (or any file of that layout, JSON or
JSONL) reads the same way: ``--sft-task-arg data_files.sft=PATH``.

The ``sft`` split takes each conversation's first exchange, the opening human turn as the prompt
and the gpt turn that answers it as the reference, as the harness's SFT trains on one user turn;
a conversation that opens otherwise is left out. Departure from the paper: it trained on "a
filtered version ... containing 53k prompt and completion pairs" without saying how it filtered,
so every first exchange is kept (``--train-limit N`` takes the first N). The templates are the
other chat tasks' (``tasks/chat.py``); the task has no test or preference split.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.datasources import Field, HubSource
from harness.task import Split, register
from harness.tasks.chat import ChatTask


def _first_exchange(row: dict) -> dict | None:
    """The conversation's opening question and the answer to it; None when it opens otherwise."""
    turns = row.get("conversations")
    if not isinstance(turns, list) or len(turns) < 2 or not all(isinstance(t, dict) for t in turns[:2]):
        return None
    question, answer = turns[0], turns[1]
    if (question.get("from"), answer.get("from")) != ("human", "gpt"):
        return None
    texts = question.get("value"), answer.get("value")
    if not all(isinstance(t, str) and t.strip() for t in texts):
        return None
    return {"id": row.get("id"), "prompt": texts[0], "reference": texts[1]}


@register("sharegpt")
@dataclass
class ShareGPT(ChatTask):
    """ShareGPT conversations' first exchanges: the SFT data of the paper's Arena-Hard protocol (Appendix D)."""

    reference_label = "the ShareGPT answer"

    def splits(self) -> dict[str, Split]:
        fields = (Field("id", "id"), Field("prompt"), Field("reference"))
        hub = HubSource("anon8231489123/ShareGPT_Vicuna_unfiltered", "train", convert=_first_exchange,
                        data_files="ShareGPT_V3_unfiltered_cleaned_split_no_imsorry.json")  # fmt: skip
        return {"sft": Split(fields, hub, local_convert=_first_exchange)}
