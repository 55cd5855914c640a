"""Reddit TL;DR summarisation (Stiennon et al., 2020): the paper's training and in-distribution task.

Hub sources (documented; loaded with ``datasets.load_dataset``):
- ``sft`` and ``test``: ``vwxyzjn/summarize_from_feedback_tldr_3_filtered`` (id, subreddit, title,
  post, summary), the filtered TL;DR SFT data with its gold summaries.
- ``preference``: ``openai/summarize_from_feedback``, config ``comparisons`` (info.{id, subreddit,
  title, post}, summaries[].{text, policy}, choice): the 93k human comparisons. The policy that
  wrote each summary is kept as ``chosen_policy`` / ``rejected_policy``, the behaviour policy that
  ``harness.pairs.skew`` can resample.
Templates: appendix C.1.1, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.datasources import Field, HubSource
from harness.task import Split, TextTask, register

INSTRUCTION = "Write a both precise and concise summary of the contents of the POST."

TEMPLATE = f"""Below is a reddit POST and the corresponding SUBREDDIT and TITLE. {INSTRUCTION}

SUBREDDIT: ${{subreddit}}
TITLE: ${{title}}
POST: ${{post}}
TL;DR:"""

REVISION_TEMPLATE = f"""Below is a reddit POST and the corresponding SUBREDDIT, TITLE, and an EXAMPLE SUMMARY. {INSTRUCTION}

SUBREDDIT: ${{subreddit}}
TITLE: ${{title}}
POST: ${{post}}
EXAMPLE SUMMARY: ${{previous}}
TL;DR:"""


def _sft(row: dict) -> dict:
    return {**{k: row.get(k) for k in ("id", "subreddit", "title", "post")}, "reference": (row.get("summary") or "").strip()}


def _comparison(row: dict) -> dict | None:
    info, summaries, choice = row.get("info") or {}, row.get("summaries") or [], row.get("choice")
    if not info.get("post") or len(summaries) != 2 or choice not in (0, 1):
        return None  # the comparisons also hold CNN/DM articles, which have no post
    chosen, rejected = summaries[choice], summaries[1 - choice]
    return {
        "id": info.get("id"), "subreddit": info.get("subreddit"), "title": info.get("title"), "post": info.get("post"),
        "chosen": chosen["text"].strip(), "rejected": rejected["text"].strip(),
        "chosen_policy": chosen.get("policy"), "rejected_policy": rejected.get("policy"),
    }  # fmt: skip


@register("tldr")
@dataclass
class TLDR(TextTask):
    """Reddit TL;DR summarisation (Stiennon et al., 2020): the paper's training and in-distribution task."""

    family = "summary"
    instruction = INSTRUCTION
    stop = ("\n",)  # a summary is one paragraph; the next line would be the model starting a new task
    source_field = "post"
    reference_label = "gold summary"
    template = TEMPLATE
    revision_template = REVISION_TEMPLATE

    def judge_source(self, example: dict) -> str:
        return f"SUBREDDIT: {example['subreddit']}\nTITLE: {example['title']}\nPOST: {example['post']}"

    def splits(self) -> dict[str, Split]:
        example = (Field("id", "id"), Field("subreddit"), Field("title"), Field("post"))
        gold = (*example, Field("reference"))
        pairs = (*example[1:], Field("id", "id", optional=True), Field("chosen"), Field("rejected"))
        sft_hub = "vwxyzjn/summarize_from_feedback_tldr_3_filtered"
        return {
            "sft": Split(gold, HubSource(sft_hub, "train", convert=_sft)),
            "preference": Split(pairs, HubSource("openai/summarize_from_feedback", "train", config="comparisons", convert=_comparison)),
            "test": Split(gold, HubSource(sft_hub, "test", convert=_sft)),
        }
