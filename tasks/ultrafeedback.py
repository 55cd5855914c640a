"""UltraFeedback binarized (Cui et al., 2023): the paper's Appendix D preference data.

Hub source: ``HuggingFaceH4/ultrafeedback_binarized`` (prompt, prompt_id, chosen and rejected as
message lists, score_chosen, score_rejected): ``preference`` = train_prefs, ``sft`` = train_sft
(the chosen answer as reference), ``test`` = test_prefs (the chosen answer as reference).
Templates: ``tasks/chat.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.datasources import Field, HubSource
from harness.task import Split, register
from harness.tasks.chat import ChatTask


def _last_assistant(messages) -> str | None:
    if isinstance(messages, str):
        return messages
    for message in reversed(messages or []):
        if message.get("role") == "assistant":
            return message.get("content")
    return None


def _pair(row: dict) -> dict:
    return {
        "id": row.get("prompt_id"), "prompt": row.get("prompt"),
        "chosen": _last_assistant(row.get("chosen")), "rejected": _last_assistant(row.get("rejected")),
        "score_chosen": row.get("score_chosen"), "score_rejected": row.get("score_rejected"),
    }  # fmt: skip


def _gold(row: dict) -> dict:
    return {"id": row.get("prompt_id"), "prompt": row.get("prompt"), "reference": _last_assistant(row.get("chosen"))}


@register("ultrafeedback")
@dataclass
class UltraFeedback(ChatTask):
    """UltraFeedback binarized (Cui et al., 2023): chat preference pairs, the paper's Appendix D training data."""

    reference_label = "the UltraFeedback chosen answer"

    def splits(self) -> dict[str, Split]:
        hub = "HuggingFaceH4/ultrafeedback_binarized"
        gold = (Field("id", "id"), Field("prompt"), Field("reference"))
        pairs = (Field("id", "id", optional=True), Field("prompt"), Field("chosen"), Field("rejected"))
        return {
            "sft": Split(gold, HubSource(hub, "train_sft", convert=_gold)),
            "preference": Split(pairs, HubSource(hub, "train_prefs", convert=_pair)),
            "test": Split(gold, HubSource(hub, "test_prefs", convert=_gold)),
        }
