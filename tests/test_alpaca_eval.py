"""The paper's judge: AlpacaEval annotators run from the config files of the installed alpaca-eval
wheel against the project's OpenAI-compatible test server: a batch of five and its regex parser,
and an annotator that weighs the verdict by the answer's log-probabilities."""

import math
import re

import pytest
from openai_server import FakeOpenAIServer

from harness.datasources import package_file
from harness.judge import build_judge, judge_pairs

pytestmark = pytest.mark.skipif(package_file("alpaca_eval", "evaluators_configs") is None, reason="alpaca-eval is not installed (it is in the dev extra)")

ITEMS = [("summary", "Write a summary.", f"Article {i} about the bridge.", f"good summary {i}", f"a poor and long summary {i}") for i in range(7)]


def farm_answers(seen: str) -> str:
    """An annotator that reads AlpacaFarm's batched prompt: for each of the five examples of the
    batch, "Output (a)" when output (a) is the good summary, else "Output (b)"."""
    batch = seen.split("## Annotation starts below")[1]
    firsts = re.findall(r"### Output \(a\) for example \d+:\n(.*?)\n\n### Output \(b\)", batch, re.S)
    return "\n\n".join("Output (a)" if first.startswith("good") else "Output (b)" for first in firsts)


def _judge(server, tmp_path, **options):
    return build_judge("alpaca-eval", {"base_url": server.base_url, "cache_path": str(tmp_path / "cache.sqlite"), "concurrency": 2, **options})


def test_alpaca_farm_annotator_in_batches_of_five_with_its_regex_parser(tmp_path):
    with FakeOpenAIServer(farm_answers) as server:
        judge = _judge(server, tmp_path)
        verdicts = judge_pairs(judge, ITEMS)
        assert server.served == 3  # 14 comparisons (both orders) in batches of five: 5, 5 and 4 padded to 5
        body = server.bodies[0]
    assert [v.preference for v in verdicts] == [1.0] * len(ITEMS)
    assert judge.batch_size == 5 and body["model"] == "gpt-4-0314" and body["max_tokens"] == 250 and body["temperature"] == 0
    system, user = body["messages"]  # the config's ChatML template, as chat messages
    assert system["role"] == "system" and "select the preferred (least wrong) output" in system["content"]
    assert user["content"].count("Write a summary.\n\nArticle") == 5 and "## Preferred Output for example 5-9" in user["content"]
    config = judge.describe_config()
    assert config["annotator"] == "alpaca_farm_greedy_gpt4" and config["config"] == "alpaca-eval package: evaluators_configs/alpaca_farm_greedy_gpt4"
    assert len(config["config_sha256"]) == 16 and config["batch_size"] == 5 and config["parser"] == "regex_parser"


def test_a_batch_answer_missing_an_example_is_asked_again(tmp_path):
    answers = iter(["Output (a)\n\nOutput (b)"])  # two verdicts for five examples: unparseable
    with FakeOpenAIServer(lambda seen: next(answers, None) or farm_answers(seen)) as server:
        judge = _judge(server, tmp_path, concurrency=1)
        verdicts = judge_pairs(judge, ITEMS[:2])
        assert server.served == 2 and judge.stats["reasked"] == 1
    assert [v.preference for v in verdicts] == [1.0, 1.0]


def test_the_papers_model_replaces_the_configs(tmp_path):
    with FakeOpenAIServer(farm_answers, models={"gpt-4-0613"}) as server:
        judge = _judge(server, tmp_path, model="gpt-4-0613")
        assert [v.preference for v in judge_pairs(judge, ITEMS[:1])] == [1.0]
        assert {b["model"] for b in server.bodies} == {"gpt-4-0613"}


def test_a_logprob_annotator_weighs_the_verdict_by_the_answer_tokens(tmp_path):
    def answer(seen: str) -> dict:
        first = re.search(r'"output": """(.*?)"""', seen, re.S).group(1)
        p = 0.8 if first.startswith("good") else 0.2  # p(model "m", the first output, is best)
        return {"text": "m" if p > 0.5 else "M", "top_logprobs": [[{"token": "m", "logprob": math.log(p)}, {"token": "M", "logprob": math.log(1 - p)}]]}

    with FakeOpenAIServer(answer) as server:
        judge = _judge(server, tmp_path, annotator="weighted_alpaca_eval_gpt4_turbo")
        verdicts = judge_pairs(judge, ITEMS[:2])
        assert server.bodies[0]["logprobs"] is True and server.bodies[0]["top_logprobs"] == 5 and server.bodies[0]["max_tokens"] == 1
    assert [v.preference for v in verdicts] == [pytest.approx(0.8)] * 2  # (0.8 + (1 - 0.2)) / 2, not a 0/1 vote
    assert [o.preference for o in verdicts[0].orders] == [pytest.approx(0.8), pytest.approx(0.2)]


def test_an_annotator_from_a_folder_of_the_same_layout(tmp_path):
    folder = tmp_path / "configs" / "mine"
    folder.mkdir(parents=True)
    (folder / "configs.yaml").write_text('mine:\n  prompt_template: "mine/prompt.txt"\n  completions_kwargs:\n    model_name: "judge"\n'
                                         '    max_tokens: 5\n  completion_parser_kwargs:\n    outputs_to_match:\n      1: "FIRST"\n      2: "SECOND"\n')  # fmt: skip
    (folder / "prompt.txt").write_text("Which is better for {instruction}? 1: {output_1} 2: {output_2}. Say FIRST or SECOND.")
    with FakeOpenAIServer(lambda seen: "FIRST" if "1: good" in seen else "SECOND") as server:
        judge = _judge(server, tmp_path, annotator=str(folder))
        assert [v.preference for v in judge_pairs(judge, ITEMS[:2])] == [1.0, 1.0]
        assert server.bodies[0]["messages"] == [{"role": "user", "content": server.bodies[0]["messages"][0]["content"]}]
    assert judge.describe_config()["config"] == str(folder)


def test_unknown_and_unsupported_annotators_fail_clearly():
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="annotator 'alpaca_farm_greedy_gpt5' is neither a folder"):
        build_judge("alpaca-eval", {"annotator": "alpaca_farm_greedy_gpt5"})
    with pytest.raises(HarnessError, match="needs processors \\['ChainOfThoughtProcessor'\\], which this judge does not run"):
        build_judge("alpaca-eval", {"annotator": "alpaca_eval_cot_gpt4_turbo_fn"})
    with pytest.raises(HarnessError, match="parses answers with 'pipeline_meta_parser'; supported: regex_parser"):
        build_judge("alpaca-eval", {"annotator": "alpaca_eval_gpt4_fn"})
