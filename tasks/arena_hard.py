"""Arena-Hard v0.1 (Li et al., 2024): 500 hard chat prompts, the paper's Appendix D evaluation.

Prompts, in this order unless ``source`` says otherwise:
- a local file (``data_files.test``) or folder (``data_dir`` with ``question.jsonl``), in
  Arena-Hard's own format (``uid`` or ``question_id``; ``prompt`` or ``turns[0].content``);
- the hub: ``lmarena-ai/arena-hard-auto-v0.1`` [train];
- offline: the workplace data folder's ``arena-hard-v0.1/``.
References are any model's answers to the same prompts: ``reference_file``, or
``<folder>/model_answer/<reference_model>.jsonl``. The paper's baseline is Llama-3.1-8B-Instruct;
Arena-Hard's classic baseline, gpt-4-0314, is the default because its answers ship offline.
Templates: ``tasks/chat.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness.datasources import Field, HubSource, Loaded, shared_data_dir
from harness.errors import HarnessError
from harness.task import Offline, Split, register
from harness.tasks.chat import ChatTask


def _question(row: dict) -> dict:
    prompt = row.get("prompt")
    if prompt is None and row.get("turns"):
        prompt = row["turns"][0].get("content")
    return {**row, "id": row.get("uid") or row.get("question_id") or row.get("id"), "prompt": prompt, "category": row.get("category"), "cluster": row.get("cluster")}


def _answer(row: dict) -> tuple[str | None, str | None]:
    """(question id, answer text) from Arena-Hard's answer formats, or a plain {id, answer}."""
    qid = row.get("uid") or row.get("question_id") or row.get("id")
    if isinstance(row.get("messages"), list) and row["messages"]:  # v0.1 / v2: messages[-1].content.answer
        content = row["messages"][-1].get("content")
        return qid, content.get("answer") if isinstance(content, dict) else content
    if isinstance(row.get("choices"), list) and row["choices"]:  # classic: choices[0].turns[0].content
        return qid, row["choices"][0]["turns"][0]["content"]
    return qid, row.get("answer")


def _shared_folder() -> Path | None:
    root = shared_data_dir()
    folder = root / "arena-hard-v0.1" if root else None
    return folder if folder and (folder / "question.jsonl").exists() else None


def _shared_questions() -> Path | None:
    folder = _shared_folder()
    return folder / "question.jsonl" if folder else None


@register("arena-hard")
@dataclass
class ArenaHard(ChatTask):
    """Arena-Hard v0.1: 500 hard chat prompts judged against a baseline model's answers (Appendix D)."""

    data_dir: str = ""  # a folder with question.jsonl and model_answer/ (Arena-Hard's layout)
    reference_model: str = "gpt-4-0314"  # whose answers are the references: model_answer/<this>.jsonl
    reference_file: str = ""  # or any answers file (Arena-Hard formats, or {id, answer} per line)

    paper_items = 500  # Appendix D: every prompt

    @property
    def reference_label(self) -> str:  # type: ignore[override]
        return f"{self.reference_model} answers" if not self.reference_file else f"answers in {self.reference_file}"

    def __post_init__(self):
        if self.data_dir and "test" not in self.data_files:
            self.data_files = {**self.data_files, "test": str(Path(self.data_dir) / "question.jsonl")}
        super().__post_init__()

    def splits(self) -> dict[str, Split]:
        fields = (Field("id", "id"), Field("prompt"))
        offline = (Offline("workplace data folder arena-hard-v0.1/question.jsonl", _shared_questions, _question),)
        hub = HubSource("lmarena-ai/arena-hard-auto-v0.1", "train", convert=_question)
        return {"test": Split(fields, hub, offline, local_convert=_question)}

    def attach_references(self, loaded: Loaded) -> Loaded:
        path = self._reference_path()
        answers = {}
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if line.strip():
                    try:
                        qid, text = _answer(json.loads(line))
                    except (json.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError) as exc:
                        raise HarnessError(f"{path}, line {lineno}: not an answer record ({exc})") from None
                    if qid is not None and isinstance(text, str) and text.strip():
                        answers[str(qid)] = text
        missing = [r["id"] for r in loaded.rows if str(r["id"]) not in answers]
        if missing:
            raise HarnessError(f"{path} has no answer for {len(missing)} of {len(loaded.rows)} prompts (first: {missing[0]!r})")
        for row in loaded.rows:
            row["reference"] = answers[str(row["id"])]
        loaded.notes.append(f"references: {path} ({len(answers)} answers)")
        return loaded

    def check_references(self) -> None:
        self._reference_path()

    def _reference_path(self) -> Path:
        if self.reference_file:
            path = Path(self.reference_file)
        else:
            folder = Path(self.data_dir) if self.data_dir else _shared_folder()
            if folder is None:
                raise HarnessError("no reference answers: pass --task-arg reference_file=ANSWERS.jsonl or data_dir=FOLDER with model_answer/")
            path = folder / "model_answer" / f"{self.reference_model}.jsonl"
        if not path.is_file():
            raise HarnessError(f"reference answers {str(path)!r} do not exist (set reference_model or reference_file)")
        return path
