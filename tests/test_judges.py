"""Judges: the OpenAI-compatible judge over real HTTP with injected failures, its cache, the
position protocol, the local LM and reward-model judges, and scoring with failed verdicts."""

import re
import sqlite3

import pytest
import torch
from openai_server import FakeOpenAIServer

from harness.judge import Comparison, build_judge, judge_pairs, render_prompt
from harness.scoring import BootstrapConfig
from harness.stages.score import score_verdicts, verdict_frame
from harness.judges.parsers import preferred_line

ITEMS = [("summary", "Summarise.", f"Article number {i}.", f"good summary {i}", f"poor summary {i}") for i in range(6)]


def prefers_good(prompt: str) -> str:
    a = re.search(r"SUMMARY A:\n(.*?)\n\nSUMMARY B:", prompt, re.S).group(1)
    return f"Summary {'A' if 'good' in a else 'B'} keeps the point.\nPreferred: {'A' if 'good' in a else 'B'}"


def _judge(server, tmp_path, **options):
    return build_judge("openai", {"model": "judge-model", "base_url": server.base_url, "cache_path": str(tmp_path / "cache.sqlite"),
                                  "timeout": 2.0, **options})  # fmt: skip


def test_both_orders_are_judged_and_averaged(tmp_path):
    with FakeOpenAIServer(prefers_good) as server:
        verdicts = judge_pairs(_judge(server, tmp_path), ITEMS)
        assert server.served == 2 * len(ITEMS)
    assert [v.preference for v in verdicts] == [1.0] * len(ITEMS)
    assert all(len(v.orders) == 2 for v in verdicts)
    assert "keeps the point" in verdicts[0].orders[0].rationale


def test_a_position_biased_judge_gets_ties(tmp_path):
    with FakeOpenAIServer(lambda prompt: "Preferred: A") as server:
        verdicts = judge_pairs(_judge(server, tmp_path), ITEMS)
    assert [v.preference for v in verdicts] == [0.5] * len(ITEMS)  # order-inconsistent -> tie


def test_single_random_order_is_seeded(tmp_path):
    with FakeOpenAIServer(lambda prompt: "Preferred: A") as server:
        one = judge_pairs(_judge(server, tmp_path), ITEMS, both_orders=False, seed=1)
        two = judge_pairs(_judge(server, tmp_path / "other"), ITEMS, both_orders=False, seed=1)
        assert server.served == 2 * len(ITEMS)  # one request per pair, per run
    assert [v.preference for v in one] == [v.preference for v in two]
    assert {v.preference for v in one} == {0.0, 1.0}  # the coin put the candidate first for some pairs, second for others


def test_injected_429_500_and_timeouts_are_retried(tmp_path):
    with FakeOpenAIServer(prefers_good) as server:
        server.faults.extend(["429", "500", "hang", "429"])
        judge = _judge(server, tmp_path, concurrency=1, timeout=0.5)
        verdicts = judge_pairs(judge, ITEMS[:2])
        assert server.requests == 4 + 4  # four faults, each retried by the client, plus four answered requests
        assert server.served == 4
    assert [v.preference for v in verdicts] == [1.0, 1.0]
    assert judge.stats["requests"] == 4 and judge.stats["failed"] == 0


def test_unparseable_answers_are_retried_then_counted_and_never_scored(tmp_path):
    with FakeOpenAIServer(prefers_good) as server:
        server.faults.extend(["garbage"])  # one unparseable answer: asked again, then fine
        judge = _judge(server, tmp_path, concurrency=1)
        verdicts = judge_pairs(judge, ITEMS[:1])
        assert verdicts[0].preference == 1.0 and judge.stats["unparseable_answers"] == 1 and judge.stats["requests"] == 3
    with FakeOpenAIServer(lambda prompt: "Both are fine.") as server:
        judge = _judge(server, tmp_path / "b", parse_retries=2)
        verdicts = judge_pairs(judge, ITEMS[:2])
        assert server.served == 2 * 2 * 3  # every order asked three times
    assert [v.preference for v in verdicts] == [None, None]
    assert "no verdict in the answer" in verdicts[0].error
    assert judge.stats["failed"] == 4 and judge.stats["unparseable_answers"] == 12


def test_a_request_that_keeps_failing_is_a_failed_verdict(tmp_path):
    with FakeOpenAIServer(prefers_good) as server:
        server.faults.extend(["500"] * 3)
        judge = _judge(server, tmp_path, concurrency=1, max_retries=2)
        verdicts = judge_pairs(judge, ITEMS[:1])
    assert verdicts[0].preference is None and "request failed after 2 retries" in verdicts[0].error
    assert judge.stats["failed"] == 1


def test_a_second_run_makes_zero_requests_and_the_cache_key_has_model_and_prompt(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET-123")
    with FakeOpenAIServer(prefers_good) as server:
        first = judge_pairs(_judge(server, tmp_path), ITEMS)
        served = server.requests
        judge = _judge(server, tmp_path)
        second = judge_pairs(judge, ITEMS)
        assert server.requests == served  # zero requests
        assert judge.stats["cache_hits"] == 2 * len(ITEMS) and judge.stats["requests"] == 0
        assert [v.preference for v in first] == [v.preference for v in second]
        judge_pairs(_judge(server, tmp_path, model="another-model"), ITEMS)
        assert server.requests == served + 2 * len(ITEMS)  # another model is another verdict
    dump = "\n".join(str(row) for row in sqlite3.connect(tmp_path / "cache.sqlite").execute("SELECT * FROM verdicts"))
    assert "SECRET" not in dump  # the key stays in the environment


def test_the_cache_key_changes_with_the_prompt_file(tmp_path, monkeypatch):
    from harness import judge as judge_module

    with FakeOpenAIServer(prefers_good) as server:
        judge_pairs(_judge(server, tmp_path), ITEMS[:1])
        served = server.requests
        edited = tmp_path / "prompts"
        edited.mkdir()
        (edited / "summary.txt").write_text((judge_module.PROMPTS / "summary.txt").read_text() + "\nBe strict.\n")
        monkeypatch.setattr(judge_module, "PROMPTS", edited)
        judge_pairs(_judge(server, tmp_path), ITEMS[:1])
        assert server.requests == served + 2


def test_cost_and_tokens_are_accounted(tmp_path):
    with FakeOpenAIServer(prefers_good) as server:
        judge = _judge(server, tmp_path, price_input=1000.0, price_output=2000.0)
        judge_pairs(judge, ITEMS[:1])
    tokens_in, tokens_out = judge.stats["prompt_tokens"], judge.stats["completion_tokens"]
    assert tokens_in > 0 and tokens_out > 0
    assert judge.stats["cost_usd"] == pytest.approx((tokens_in * 1000 + tokens_out * 2000) / 1e6)


def test_parser_takes_the_last_verdict():
    assert preferred_line('Format: "Preferred: A". B is tighter.\nPreferred: **B**') == (0.0, 'Format: "Preferred: A". B is tighter.')
    assert preferred_line("no verdict") is None


def test_prompts_hold_source_instruction_and_both_candidates():
    prompt = render_prompt(Comparison("summary", "Write a summary.", "THE ARTICLE", "first", "second"))
    assert "Write a summary." in prompt and "THE ARTICLE" in prompt and "SUMMARY A:\nfirst" in prompt and "SUMMARY B:\nsecond" in prompt
    chat = render_prompt(Comparison("chat", "Respond.", "How do I sort a list?", "x", "y"))
    assert "USER REQUEST:\nHow do I sort a list?" in chat and "helpful" in chat and "correct" in chat


def test_local_lm_judge_reads_verdict_probabilities_offline():
    judge = build_judge("local-lm", {"batch_size": 4})
    items = [("summary", "Write a summary.", "The council will open the bridge next year.", "The bridge opens next year.", "Cats are nice.")]
    verdict = judge_pairs(judge, items)[0]
    assert verdict.preference is not None and 0 < verdict.preference < 1
    first, swapped = (o.preference for o in verdict.orders)
    assert verdict.preference == pytest.approx((first + 1 - swapped) / 2)
    assert judge.is_proxy()


def test_reward_model_judge_is_sigmoid_of_reward_difference(tmp_path):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import (
        LlamaConfig,
        LlamaForSequenceClassification,
        PreTrainedTokenizerFast,
    )

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["good summary poor summary article text"] * 3, vocab_size=300, special_tokens=["<eos>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>", pad_token="<eos>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, num_labels=1, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    folder = tmp_path / "rm"
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    judge = build_judge("reward-model", {"model": str(folder)})
    c = Comparison("summary", "Summarise.", "article text", "good summary", "poor summary")
    verdict = judge.judge([c])[0]
    r_a, r_b = judge.rewards([judge._text(c, "good summary"), judge._text(c, "poor summary")])
    assert verdict.preference == pytest.approx(float(torch.sigmoid(torch.tensor(r_a - r_b))), abs=1e-6)


def test_scores_leave_failed_verdicts_out_and_count_them():
    judgments = [{"example_id": str(i), "revision": 0, "method": "srpo", "opponent": "reference", "preference": p}
                 for i, p in enumerate([1.0, 0.0, 0.5, None, 1.0])]  # fmt: skip
    examples = [{"id": str(i), "reference": "gold text"} for i in range(5)]
    generations = [{"example_id": str(i), "method": "srpo", "revision": 0, "text": "a summary"} for i in range(5)]
    scores, _ = score_verdicts(verdict_frame(judgments, generations, examples), BootstrapConfig(resamples=200))
    row = scores.iloc[0]
    assert row["failed"] == 1 and row["n"] == 4 and (row["wins"], row["ties"], row["losses"]) == (2, 1, 1)
    assert row["win_rate"] == pytest.approx(2.5 / 4) and row["mean_length"] == 2 and row["opponent_mean_length"] == 2
