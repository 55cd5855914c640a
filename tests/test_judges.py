"""Judges: the OpenAI-compatible judge over real HTTP with injected failures, its cache, the
position protocol, the local LM and reward-model judges, and scoring with failed verdicts."""

import json
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


def test_injected_429_500_and_timeouts_are_retried_and_every_attempt_is_counted(tmp_path):
    with FakeOpenAIServer(prefers_good) as server:
        server.faults.extend(["429", "500", "hang", "429"])
        judge = _judge(server, tmp_path, concurrency=1, timeout=0.5)
        verdicts = judge_pairs(judge, ITEMS[:2])
        assert server.requests == 4 + 4  # four faults, each retried, plus four answered requests
        assert server.served == 4
    assert [v.preference for v in verdicts] == [1.0, 1.0]
    assert judge.stats["requests"] == server.requests and judge.stats["retried"] == 4 and judge.stats["timeouts"] == 1
    assert judge.stats["failed"] == 0 and judge.stats["answered"] == 4


def test_a_reask_changes_the_request_first_with_a_reminder_then_by_sampling(tmp_path):
    from harness.judges.openai_judge import REMINDER

    # temperature 0: the same request always gets the same unparseable answer; the reminder fixes it
    with FakeOpenAIServer(lambda seen: "Preferred: A" if REMINDER in seen else "Both are fine.") as server:
        judge = _judge(server, tmp_path, concurrency=1)
        verdicts = judge_pairs(judge, ITEMS[:1])
        assert [v.preference for v in verdicts] == [0.5] and server.served == 4  # each order: asked, then asked with the reminder
        assert judge.stats["reasked"] == 2 and judge.stats["unparseable_answers"] == 2
        reminded = [b for b in server.bodies if b["messages"][-1]["content"] == REMINDER]
        assert len(reminded) == 2 and all(b["temperature"] == 0 for b in server.bodies)
    # only sampling helps: the third ask samples, with a seed
    sample = lambda seen, seed: f"Preferred: {'A' if 'good summary 0' in seen.split('SUMMARY B')[0] else 'B'}"  # noqa: E731
    with FakeOpenAIServer(lambda seen: "Both are fine.", sample=sample) as server:
        judge = _judge(server, tmp_path / "s", concurrency=1)
        verdicts = judge_pairs(judge, ITEMS[:1])
        assert [v.preference for v in verdicts] == [1.0] and server.served == 6
        assert [b["temperature"] for b in server.bodies] == [0, 0, 0.7] * 2 and server.bodies[2]["seed"] == 2


def test_unparseable_answers_give_up_with_the_reason_and_are_never_scored_or_cached(tmp_path):
    with FakeOpenAIServer(lambda prompt: "Both are fine.") as server:
        judge = _judge(server, tmp_path, parse_retries=2)
        verdicts = judge_pairs(judge, ITEMS[:2])
        assert server.served == 2 * 2 * 3  # every order asked three times
        assert judge.stats["failed"] == 4 and judge.stats["unparseable_answers"] == 12
        judge_pairs(judge, ITEMS[:2])
        assert server.served == 2 * 2 * 3 * 2  # a failed verdict is not cached: asked again
    assert [v.preference for v in verdicts] == [None, None]
    assert "no verdict in 3 answer(s) (asked again with a reminder of the format, then sampled at temperature 0.7)" in verdicts[0].error
    assert "Both are fine." in verdicts[0].error


def test_identical_comparisons_in_one_call_are_asked_once(tmp_path):
    with FakeOpenAIServer(prefers_good) as server:
        judge = _judge(server, tmp_path)
        verdicts = judge_pairs(judge, ITEMS[:3] * 4)
        assert server.served == 3 * 2 and judge.stats["deduplicated"] == 3 * 2 * 3
    assert [v.preference for v in verdicts] == [1.0] * 12


def test_a_refused_request_is_not_retried_and_the_error_says_what_to_do(tmp_path):
    long_items = [("summary", "Summarise.", "word " * 500, "good summary", "poor summary")]
    with FakeOpenAIServer(prefers_good, context_length=300) as server:
        judge = _judge(server, tmp_path, max_source_words=0)  # never cut: the article overflows the judge's context
        verdict = judge_pairs(judge, long_items)[0]
        assert server.requests == 2 and judge.stats["refused"] == 2 and judge.stats["retried"] == 0
        assert "HTTP 400 context_length_exceeded" in verdict.error and "refused, not retried" in verdict.error
        assert "cut the source shorter (--judge-arg max_source_words=N, now 0)" in verdict.error
        cut = _judge(server, tmp_path, max_source_words=200)
        assert judge_pairs(cut, long_items)[0].preference == 1.0  # cut to the judge's context, it fits
    with FakeOpenAIServer(prefers_good, models={"other-model"}) as server:
        verdict = judge_pairs(_judge(server, tmp_path / "m"), ITEMS[:1])[0]
        assert server.requests == 2 and "HTTP 404 model_not_found" in verdict.error and "/v1/models" in verdict.error


def test_a_server_answering_one_request_at_a_time_loses_no_verdict(tmp_path):
    """64 comparisons queued at a server that serves one at a time: timeouts shrink the requests in
    flight, timed-out requests are retried, and every verdict arrives."""
    with FakeOpenAIServer(prefers_good, serial=True, delay=0.05) as server:
        judge = _judge(server, tmp_path, concurrency=32, timeout=0.5)
        items = [("summary", "Summarise.", f"Article {i}.", f"good summary {i}", f"poor summary {i}") for i in range(32)]
        verdicts = judge_pairs(judge, items)
    assert all(v.preference == 1.0 for v in verdicts)
    assert judge.stats["failed"] == 0 and judge.stats["timeouts"] > 0 and judge.stats["requests"] == server.requests
    assert judge.stats["answered"] == 64


def test_the_openai_key_goes_only_where_the_user_sends_it(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-SECRET-for-openai-only")
    monkeypatch.setenv("MY_SERVER_KEY", "local-key")
    with FakeOpenAIServer(prefers_good) as server:
        judge_pairs(_judge(server, tmp_path), ITEMS[:1])
        judge_pairs(_judge(server, tmp_path / "b", api_key_env="MY_SERVER_KEY"), ITEMS[:1])
    assert [h.get("Authorization") for h in server.headers] == ["Bearer no-key"] * 2 + ["Bearer local-key"] * 2


def test_a_request_that_keeps_failing_is_a_failed_verdict(tmp_path):
    with FakeOpenAIServer(prefers_good) as server:
        server.faults.extend(["500"] * 6)  # both orders, three attempts each
        judge = _judge(server, tmp_path, concurrency=1, max_retries=2)
        verdicts = judge_pairs(judge, ITEMS[:1])
    assert verdicts[0].preference is None and "HTTP 500: injected 500 after 3 attempt(s) (2 retries with backoff)" in verdicts[0].error
    assert judge.stats["failed"] == 2 and judge.stats["requests"] == 6  # both orders, counted as comparisons


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


def test_the_local_lm_judge_reads_a_base_model_without_a_chat_template(tmp_path):
    """A base model has no chat template (transformers refuses to apply one): the judge prompt goes
    to it as it is, with the answer started under it, where the run used to end in a traceback at
    the judging stage, after training and generating."""
    from tiny import build_tiny

    judge = build_judge("local-lm", {"model": str(build_tiny(tmp_path / "base"))})
    verdict = judge_pairs(judge, [("summary", "Summarise.", "The council will open the bridge.", "The bridge opens.", "Cats.")])[0]
    assert 0 < verdict.preference < 1 and verdict.error == ""
    shown = Comparison("summary", "Summarise.", "The council will open the bridge.", "The bridge opens.", "Cats.")
    assert judge._prompt(shown) == f"{render_prompt(shown)}\n\nPreferred:"


def _absolute_position_lm(folder):
    """A tiny random GPT-2 (learned absolute positions) with SmolLM2's tokenizer and chat template:
    a model whose next token changes when a prompt's positions shift by its left padding."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from harness.models import load_tokenizer, resolve_model

    tokenizer = load_tokenizer(resolve_model("smollm2-135m"))
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=2048)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_a_comparison_past_the_local_judges_positions_fails_alone(tmp_path):
    """A GPT-2 of 192 learned positions and two comparisons, one of which its prompt outgrows: that
    verdict fails, saying what to lower (failed verdicts are counted, never scored, and asked again
    by the next run), where its forward would index out of the position table; the other is judged."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from harness.models import load_tokenizer, resolve_model

    folder = tmp_path / "short"
    tokenizer = load_tokenizer(resolve_model("smollm2-135m"))
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=192)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    judge = build_judge("local-lm", {"model": str(folder)})
    short = Comparison("summary", "Summarise.", "The council met.", "A plan.", "Cats.")
    long = Comparison("summary", "Summarise.", "The council met.", "The council agreed a plan for the town. " * 20, "Cats.")
    verdicts = judge.judge([long, short])
    assert verdicts[0].preference is None and re.fullmatch(r"the comparison is \d+ tokens, past the judge model's 192 positions: lower "
                                                              r"--judge-arg max_source_tokens, or judge with a model of a longer context", verdicts[0].error)
    assert 0 < verdicts[1].preference < 1 and verdicts[1].error == ""


@pytest.mark.parametrize("model", ["smollm2-135m", "absolute positions"])
def test_the_local_lm_judge_batches_by_length_and_answers_in_the_order_asked(model, tmp_path):
    """Comparisons go to the model in batches of similar length (left-padded to the longest), not
    in the order given; each verdict must come back in its comparison's place, and be the one its
    prompt gets alone, whatever padding its batch gave it (positions count from its first token)."""
    model = _absolute_position_lm(tmp_path / "gpt2") if model == "absolute positions" else model
    words = "The council met on Tuesday and agreed a plan for the town centre. "
    comparisons = [Comparison("summary", "Summarise.", words * n, f"Summary {n}: the council agreed a plan.", "Cats.") for n in (9, 1, 5, 2, 7, 1, 3)]
    single = build_judge("local-lm", {"model": model})
    alone = [single.judge([c])[0] for c in comparisons]  # each prompt in a call of its own: no padding, no order to keep
    assert len({round(v.preference, 4) for v in alone}) > 4  # distinct verdicts: a mix-up of their places would show
    batched = build_judge("local-lm", {"model": model})
    together = batched.judge(comparisons)
    assert batched.stats["forward_passes"] == 1  # "auto" on a CPU: 32 prompts or 4096 tokens a batch, which all seven fit
    assert [v.preference for v in together] == pytest.approx([v.preference for v in alone], abs=1e-5)
    small = build_judge("local-lm", {"model": model, "max_batch_tokens": 600})
    assert [v.preference for v in small.judge(comparisons)] == pytest.approx([v.preference for v in alone], abs=1e-5)
    assert 1 < small.stats["forward_passes"] < len(comparisons)
    # a prompt judged once keeps its verdict to the bit, whatever it is batched with later (a revision
    # that repeats the text before it asks the same comparison again), and costs no forward
    again = batched.judge([comparisons[3], comparisons[0]])
    assert [v.preference for v in again] == [together[3].preference, together[0].preference] and batched.stats["forward_passes"] == 0


def test_local_judges_batch_as_large_as_the_device_allows(monkeypatch):
    """On a CPU a batch holds 32 prompts or 4096 padded tokens; on a GPU, whose forward waits on
    kernel launches whatever its rows, 512 or 65,536, and the judging stage hands it enough pairs
    to fill them. An explicit batch size is the user's."""
    prompts = [[1] * 400] * 1000
    judge, explicit = build_judge("local-lm"), build_judge("reward-model", {"model": "some/reward-model", "batch_size": 8})
    assert (judge.chunk_size, [len(b) for b in judge._batches(prompts)]) == (32, [10] * 100)
    assert (explicit.chunk_size, {len(b) for b in explicit._batches(prompts)}) == (32, {8})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert (judge.chunk_size, [len(b) for b in judge._batches(prompts)]) == (512, [163] * 6 + [22])  # 163 x 400 <= 65,536 < 164 x 400
    assert (explicit.chunk_size, {len(b) for b in explicit._batches(prompts)}) == (32, {8})
    assert judge.describe_config()["dtype"] == explicit.describe_config()["dtype"] == "bfloat16"


def test_a_local_judge_out_of_accelerator_memory_names_the_settings():
    from harness.errors import HarnessError

    judge = build_judge("local-lm", {"batch_size": 4})
    judge._load()

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")

    judge._model.forward = out_of_memory
    with pytest.raises(HarnessError, match=r"^out of accelerator memory in judge 'local-lm': lower --judge-arg max_batch_tokens \(now auto\) "
                                           r"or batch_size \(now 4\); verdicts already written are kept$"):  # fmt: skip
        judge.judge([Comparison("summary", "Summarise.", "An article.", "One summary.", "Another.")])


def _reward_model(folder, num_labels: int = 1):
    """A tiny Llama sequence classifier with ``num_labels`` outputs, and its tokenizer, saved to ``folder``."""
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
                         num_key_value_heads=2, num_labels=num_labels, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_judge_refuses_a_model_of_the_other_kind_before_the_run_and_at_loading(tmp_path, tiny):
    """A language model loads as a sequence classifier too, its score head drawn at random, and a
    reward model as a language model: each judge (and the run's own model) says so before the run
    trains anything, as the reward-model judge does of a classifier of two labels; a checkpoint
    that names no architecture is caught by the weights it lacks, when it loads."""
    import shutil

    from harness.errors import HarnessError
    from harness.models import check_kind

    reward_model = str(_reward_model(tmp_path / "rm"))
    build_judge("reward-model", {"model": reward_model}).check_access()
    build_judge("local-lm", {"model": tiny}).check_access()
    with pytest.raises(HarnessError, match=r"judge 'reward-model': model '.*' is a LlamaForCausalLM, whose score head would be drawn at random: pass a reward model"):
        build_judge("reward-model", {"model": tiny}).check_access()
    with pytest.raises(HarnessError, match=r"judge 'local-lm': model '.*' is a LlamaForSequenceClassification, whose language-model head would be"):
        build_judge("local-lm", {"model": reward_model}).check_access()
    with pytest.raises(HarnessError, match=r"^model '.*' is a LlamaForSequenceClassification"):
        check_kind(reward_model, "model", scores=False)  # the run's own model, in harness.stages.text.check_access
    with pytest.raises(HarnessError, match=r"scores 2 labels, where a reward is one number"):
        build_judge("reward-model", {"model": str(_reward_model(tmp_path / "two", num_labels=2))}).check_access()
    unnamed = shutil.copytree(tiny, tmp_path / "unnamed")
    config = json.loads((unnamed / "config.json").read_text())
    (unnamed / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "architectures"}))
    judge = build_judge("reward-model", {"model": str(unnamed)})
    judge.check_access()
    with pytest.raises(HarnessError, match=r"lacks weights a sequence classifier needs \(score.weight\)"):
        judge.judge([Comparison("summary", "Summarise.", "article text", "good summary", "poor summary")])


def test_a_reward_model_judge_cuts_a_long_source_never_the_candidates(tmp_path):
    """A text longer than max_length lost its end, the candidate: two candidates cut away tied at
    0.5. The source is cut instead (" [...]"), the same for both, and each text ends with its
    candidate whole."""
    judge = build_judge("reward-model", {"model": str(_reward_model(tmp_path / "rm")), "max_length": 40})
    c = Comparison("summary", "Summarise.", "article text " * 60, "good summary", "poor summary good")
    verdict = judge.judge([c])[0].preference
    fitted = judge._fitted(c)
    assert fitted.source.endswith(" [...]") and fitted.source.startswith("article text article")
    for candidate in (c.a, c.b):
        ids = judge._tokenizer(judge._text(fitted, candidate))["input_ids"]
        assert len(ids) <= 40 and judge._tokenizer.decode(ids).endswith(candidate)
    r_a, r_b = judge.rewards([judge._text(fitted, c.a), judge._text(fitted, c.b)])
    assert r_a != r_b and verdict == pytest.approx(float(torch.sigmoid(torch.tensor(r_a - r_b))), abs=1e-6)
    short = Comparison("summary", "Summarise.", "article text", "good summary", "poor summary")
    assert judge._fitted(short) == short  # what fits is not touched


def test_reward_model_judge_is_sigmoid_of_reward_difference(tmp_path):
    folder = _reward_model(tmp_path / "rm")
    judge = build_judge("reward-model", {"model": str(folder)})
    c = Comparison("summary", "Summarise.", "article text", "good summary", "poor summary")
    verdict = judge.judge([c])[0]
    assert judge.stats == {"forward_passes": 1, "scored_texts": 2, "failed": 0}
    assert judge.judge([Comparison("summary", "Summarise.", "article text", "poor summary", "good summary")])[0].preference == pytest.approx(1 - verdict.preference, abs=1e-6)
    assert judge.stats["forward_passes"] == judge.stats["scored_texts"] == 0  # both texts scored before: the usage log counts no work
    r_a, r_b = judge.rewards([judge._text(c, "good summary"), judge._text(c, "poor summary")])
    assert verdict.preference == pytest.approx(float(torch.sigmoid(torch.tensor(r_a - r_b))), abs=1e-6)
    # texts are scored in batches of similar length; each reward comes back in its text's place
    texts = [judge._text(c, "good " * n + "summary") for n in (6, 1, 4, 2, 5)]
    one_by_one = [judge.rewards([t])[0] for t in texts]
    assert build_judge("reward-model", {"model": str(folder)}).rewards(texts) == pytest.approx(one_by_one, abs=1e-5)  # a fresh judge: none scored yet
    assert len({round(r, 4) for r in one_by_one}) == len(texts)


def test_scores_leave_failed_verdicts_out_and_count_them():
    judgments = [{"example_id": str(i), "revision": 0, "method": "srpo", "opponent": "reference", "preference": p}
                 for i, p in enumerate([1.0, 0.0, 0.5, None, 1.0])]  # fmt: skip
    examples = [{"id": str(i), "reference": "gold text"} for i in range(5)]
    generations = [{"example_id": str(i), "method": "srpo", "revision": 0, "text": "a summary"} for i in range(5)]
    scores, _ = score_verdicts(verdict_frame(judgments, generations, examples), BootstrapConfig(resamples=200))
    row = scores.iloc[0]
    assert row["failed"] == 1 and row["n"] == 4 and (row["wins"], row["ties"], row["losses"]) == (2, 1, 1)
    assert row["win_rate"] == pytest.approx(2.5 / 4) and row["mean_length"] == 2 and row["opponent_mean_length"] == 2


def _text_judges():
    from harness import registry
    from harness.judge import Judge

    return [(name, cls) for name, cls in registry.judges.items() if isinstance(cls, type) and issubclass(cls, Judge)]


@pytest.mark.parametrize("name, cls", _text_judges())
def test_every_option_that_can_change_a_verdict_is_in_the_judges_identity(name, cls):
    """A run's judgments and the verdict cache are keyed by ``describe_config``: an option missing
    from it would let a changed setting reuse old verdicts, as the reward model's ``max_length``
    once did. Only options declared not to change verdicts (batch sizes, retries, prices) are left
    out, and changing one of those keeps the key."""
    from dataclasses import fields

    from harness.stages.judge import judge_fingerprint

    needed = {"model": "some/reward-model"} if name == "reward-model" else {}
    judge = build_judge(name, needed)
    options = {f.name for f in fields(cls) if f.init}
    assert options - cls.not_in_verdicts <= judge.describe_config().keys()
    assert cls.not_in_verdicts <= options  # a misspelt name would silently leave nothing out
    fingerprint = judge_fingerprint(judge, "summary", True, 0)
    changed = {"max_length": 512, "max_source_tokens": 64, "max_source_words": 100, "temperature": 0.5, "model": "another/model"}
    for option in options & changed.keys():
        assert judge_fingerprint(build_judge(name, {**needed, option: changed[option]}), "summary", True, 0) != fingerprint, option
    transport = {"batch_size": 1, "concurrency": 2, "max_retries": 0, "timeout": 5.0, "cache_path": "/tmp/elsewhere.sqlite"}
    for option in cls.not_in_verdicts & transport.keys():
        assert judge_fingerprint(build_judge(name, {**needed, option: transport[option]}), "summary", True, 0) == fingerprint, option


def test_a_local_judge_is_known_by_its_weights_not_only_by_its_folder(tmp_path):
    """New weights saved into the judge model's folder (a reward model retrained in place) make a
    new judge: its verdicts are asked again, never taken from the old weights' run or cache."""
    from tiny import build_tiny

    from harness.stages.judge import judge_fingerprint

    folder = str(build_tiny(tmp_path / "judge"))
    before = judge_fingerprint(build_judge("local-lm", {"model": folder}), "summary", True, 0)
    assert judge_fingerprint(build_judge("local-lm", {"model": folder}), "summary", True, 0) == before
    build_tiny(tmp_path / "judge", seed=1)
    assert judge_fingerprint(build_judge("local-lm", {"model": folder}), "summary", True, 0) != before
